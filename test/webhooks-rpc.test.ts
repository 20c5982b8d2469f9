// Goal: WebhookService behaves as proto/holdfast/v1/webhooks.proto says: endpoints are created
// with a whsec_ secret shown once, listed, updated, disabled, deleted and rotated within the
// caller's tenant only; URLs on private, loopback or link-local addresses (and plain http) are
// refused with INVALID_ARGUMENT unless the network is allow-listed; filters must name known
// types; delivery RPCs answer NOT_FOUND / FAILED_PRECONDITION with their ErrorDetail reasons.
// Method: a real ledger server on port 0 (loopback allow-listed, as every webhook suite does),
// called over Connect, gRPC and gRPC-Web; and the same handlers in memory
// (createRouterTransport) with no allow-list and a fake DNS resolver, to check the address rules
// for names that resolve to private or public addresses without any real DNS.
import { Code, ConnectError, createClient, createRouterTransport, type Interceptor } from "@connectrpc/connect";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorDetailSchema, type ErrorDetail } from "@holdfast/gen/holdfast/v1/errors_pb";
import { DeliveryStatus, DisabledReason, WebhookService } from "@holdfast/gen/holdfast/v1/webhooks_pb";
import { createErrorInterceptor, PRINCIPAL_KEY, webhookService } from "@holdfast/ledger/rpc";
import { createApiKey, createTenant } from "@holdfast/ledger/auth/api-keys";
import { endpoints_per_tenant_max } from "@holdfast/webhooks-core/store";
import { quietLogger } from "./support/ledger.js";
import { loopback_networks } from "./support/webhooks.js";
import { startTestServer, type Protocol } from "./support/server.js";

let s: Awaited<ReturnType<typeof startTestServer>>;

beforeAll(async () => {
  s = await startTestServer({ HOLDFAST_WEBHOOK_ALLOWED_NETWORKS: loopback_networks });
});
afterAll(async () => {
  await s?.close();
});

async function failure(call: Promise<unknown>): Promise<{ code: Code; detail: ErrorDetail }> {
  const err = await call.then(
    () => {
      throw new Error("expected the call to fail");
    },
    (e: unknown) => ConnectError.from(e),
  );
  const [detail] = err.findDetails(ErrorDetailSchema);
  expect(detail, err.message).toBeDefined();
  return { code: err.code, detail: detail! };
}

const hooks = (protocol: Protocol = "connect") => s.client(WebhookService, protocol);

describe.each(["connect", "grpc", "grpc-web"] as const)("WebhookService over %s", (protocol) => {
  it("creates an endpoint, shows its secret once, and lists it without it", async () => {
    const created = await hooks(protocol).createEndpoint({
      url: "http://127.0.0.1:9/hooks",
      eventTypes: ["holdfast.hold.*", "holdfast.deposit.completed"],
      description: `made over ${protocol}`,
    });
    expect(created.secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    expect(Buffer.from(created.secret.slice(6), "base64")).toHaveLength(32);
    const endpoint = created.endpoint!;
    expect(endpoint).toMatchObject({ url: "http://127.0.0.1:9/hooks", enabled: true, disabledReason: DisabledReason.UNSPECIFIED });
    expect(endpoint.eventTypes).toEqual(["holdfast.hold.*", "holdfast.deposit.completed"]);
    const listed = await hooks(protocol).listEndpoints({ pageSize: 500 });
    const found = listed.endpoints.find((e) => e.endpointId === endpoint.endpointId);
    expect(found?.description).toBe(`made over ${protocol}`);
    expect(JSON.stringify(listed, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v))).not.toContain(created.secret.slice(6));
  });
});

describe("URL rules with loopback allow-listed", () => {
  it.each([
    ["http://10.0.0.1/hooks", "private"],
    ["https://192.168.1.10/", "private"],
    ["https://172.16.5.4/", "private"],
    ["https://169.254.169.254/latest/meta-data", "linkLocal"],
    ["https://[fe80::1]/", "linkLocal"],
    ["https://[fd00::1]/", "uniqueLocal"],
    ["https://[::ffff:10.0.0.1]/", "private"],
    ["https://100.64.0.1/", "carrierGradeNat"],
    ["https://0.0.0.0/", "unspecified"],
    ["https://224.0.0.1/", "multicast"],
  ])("refuses %s with INVALID_ARGUMENT", async (url, range) => {
    const { code, detail } = await failure(hooks().createEndpoint({ url }));
    expect(code).toBe(Code.InvalidArgument);
    expect(detail.reason).toBe("INVALID_FIELD");
    expect(detail.field).toBe("url");
    expect(detail.message).toContain(range);
  });

  it.each([
    ["", "is required"],
    ["not a url", "absolute URL"],
    ["ftp://127.0.0.1/x", "https"],
    ["https://user:pw@127.0.0.1/x", "user info"],
    ["https://127.0.0.1/x#frag", "fragment"],
    [`https://127.0.0.1/${"a".repeat(2048)}`, "2048"],
  ])("refuses a malformed URL (%#)", async (url, why) => {
    const { code, detail } = await failure(hooks().createEndpoint({ url }));
    expect(code).toBe(Code.InvalidArgument);
    expect(detail.field).toBe("url");
    expect(detail.message).toContain(why);
  });

  it("accepts loopback over http and https, and localhost by name", async () => {
    for (const url of ["http://127.0.0.1:1/a", "https://127.0.0.2/b", "http://[::1]:1/c", "http://localhost:1/d"]) {
      const { endpoint } = await hooks().createEndpoint({ url });
      expect(endpoint?.url).toBe(url);
    }
  });

  it("refuses unknown event types and duplicates, naming the field", async () => {
    for (const eventTypes of [["holdfast.nope"], ["holdfast.bogus.*"], ["*"], ["holdfast.hold.created", "holdfast.hold.created"]]) {
      const { code, detail } = await failure(hooks().createEndpoint({ url: "http://127.0.0.1:1/", eventTypes }));
      expect(code).toBe(Code.InvalidArgument);
      expect(detail.field).toBe("event_types");
    }
  });
});

describe("URL rules without an allow-list (in memory, fake DNS)", () => {
  const fakeDns: Record<string, string[]> = {
    "public.example": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"],
    "sneaky.example": ["93.184.216.34", "10.1.2.3"],
    "metadata.example": ["169.254.169.254"],
    "v6loop.example": ["::1"],
  };
  const client = () => {
    const principal: Interceptor = (next) => (req) => {
      req.contextValues.set(PRINCIPAL_KEY, { tenantId: s.tenantId, keyId: "test", role: "admin", walletId: null });
      return next(req);
    };
    const transport = createRouterTransport(
      (router) =>
        router.service(
          WebhookService,
          webhookService({
            pool: s.app.pool,
            webhooks: {
              allowedNetworks: [],
              secretOverlapSeconds: 60,
              resolve: async (host) => {
                const found = fakeDns[host];
                if (found === undefined) throw new Error("ENOTFOUND");
                return found;
              },
            },
          }),
        ),
      { router: { interceptors: [createErrorInterceptor(quietLogger), principal] } },
    );
    return createClient(WebhookService, transport);
  };

  it.each([
    ["http://127.0.0.1:8080/hooks", "loopback"],
    ["https://127.0.0.1/hooks", "loopback"],
    ["https://[::1]/hooks", "loopback"],
    ["https://sneaky.example/hooks", "private"],
    ["https://metadata.example/", "linkLocal"],
    ["https://v6loop.example/", "loopback"],
    ["https://nowhere.example/", "does not resolve"],
    ["http://public.example/hooks", "https"],
  ])("refuses %s", async (url, why) => {
    const { code, detail } = await failure(client().createEndpoint({ url }));
    expect(code).toBe(Code.InvalidArgument);
    expect(detail.field).toBe("url");
    expect(detail.message).toContain(why);
  });

  it("accepts https to a name that resolves only to public addresses", async () => {
    const { endpoint } = await client().createEndpoint({ url: "https://public.example/hooks" });
    expect(endpoint?.url).toBe("https://public.example/hooks");
    await client().deleteEndpoint({ endpointId: endpoint!.endpointId });
  });
});

describe("endpoint lifecycle", () => {
  it("updates fields, disables and re-enables, rotates the secret, deletes", async () => {
    const { endpoint, secret } = await hooks().createEndpoint({ url: "http://127.0.0.1:1/x" });
    const id = endpoint!.endpointId;

    const renamed = await hooks().updateEndpoint({
      endpointId: id,
      url: "http://127.0.0.1:2/y",
      description: "renamed",
      eventTypes: { eventTypes: ["holdfast.spend.completed"] },
    });
    expect(renamed.endpoint).toMatchObject({ url: "http://127.0.0.1:2/y", description: "renamed", eventTypes: ["holdfast.spend.completed"] });
    const untouched = await hooks().updateEndpoint({ endpointId: id });
    expect(untouched.endpoint).toMatchObject({ url: "http://127.0.0.1:2/y", description: "renamed", enabled: true });

    const off = await hooks().updateEndpoint({ endpointId: id, enabled: false });
    expect(off.endpoint).toMatchObject({ enabled: false, disabledReason: DisabledReason.MANUAL });
    expect(off.endpoint?.disabledAt).toBeDefined();
    const test = await failure(hooks().sendTestEvent({ endpointId: id }));
    expect(test.code).toBe(Code.FailedPrecondition);
    expect(test.detail.reason).toBe("WEBHOOK_ENDPOINT_DISABLED");
    const on = await hooks().updateEndpoint({ endpointId: id, enabled: true });
    expect(on.endpoint).toMatchObject({ enabled: true, disabledReason: DisabledReason.UNSPECIFIED });
    expect(on.endpoint?.disabledAt).toBeUndefined();

    const rotated = await hooks().rotateEndpointSecret({ endpointId: id, overlapSeconds: 3600 });
    expect(rotated.secret).toMatch(/^whsec_/);
    expect(rotated.secret).not.toBe(secret);
    const expires = timestampDate(rotated.endpoint!.previousSecretExpiresAt!).getTime();
    expect(Math.abs(expires - Date.now() - 3_600_000)).toBeLessThan(60_000);
    const immediate = await hooks().rotateEndpointSecret({ endpointId: id, overlapSeconds: 0 });
    expect(immediate.endpoint?.previousSecretExpiresAt).toBeUndefined();
    const tooLong = await failure(hooks().rotateEndpointSecret({ endpointId: id, overlapSeconds: 8 * 24 * 3600 }));
    expect(tooLong.detail.field).toBe("overlap_seconds");

    const queued = await hooks().sendTestEvent({ endpointId: id });
    expect(queued.delivery).toMatchObject({ endpointId: id, eventType: "holdfast.webhook.test", status: DeliveryStatus.PENDING, attempts: 0 });
    const listed = await hooks().listDeliveries({ endpointId: id });
    expect(listed.deliveries.map((d) => d.deliveryId)).toEqual([queued.delivery!.deliveryId]);
    const retried = await hooks().retryDelivery({ deliveryId: queued.delivery!.deliveryId });
    expect(retried.delivery?.status).toBe(DeliveryStatus.PENDING);

    await hooks().deleteEndpoint({ endpointId: id });
    for (const call of [
      () => hooks().deleteEndpoint({ endpointId: id }),
      () => hooks().updateEndpoint({ endpointId: id, enabled: false }),
      () => hooks().rotateEndpointSecret({ endpointId: id }),
      () => hooks().listDeliveries({ endpointId: id }),
      () => hooks().sendTestEvent({ endpointId: id }),
    ]) {
      const { code, detail } = await failure(call());
      expect(code).toBe(Code.NotFound);
      expect(detail.reason).toBe("WEBHOOK_ENDPOINT_NOT_FOUND");
    }
    const gone = await failure(hooks().retryDelivery({ deliveryId: queued.delivery!.deliveryId }));
    expect(gone.detail.reason).toBe("WEBHOOK_DELIVERY_NOT_FOUND");
  });

  it("checks ids, statuses and page tokens", async () => {
    for (const [call, field] of [
      [() => hooks().updateEndpoint({ endpointId: "" }), "endpoint_id"],
      [() => hooks().deleteEndpoint({ endpointId: "not-a-uuid" }), "endpoint_id"],
      [() => hooks().retryDelivery({ deliveryId: "x" }), "delivery_id"],
      [() => hooks().listEndpoints({ pageToken: "garbage" }), "page_token"],
      [() => hooks().listEndpoints({ pageSize: 501 }), "page_size"],
      [() => hooks().listDeliveries({ endpointId: "00000000-0000-7000-8000-000000000000", status: 9 as DeliveryStatus }), "status"],
    ] as const) {
      const { code, detail } = await failure(call());
      expect(code).toBe(Code.InvalidArgument);
      expect(detail.field).toBe(field);
    }
  });

  it("pages through endpoints newest first", async () => {
    const { tenantId } = await createTenant(s.app.pool, "paging-tenant");
    const key = (await createApiKey(s.app.pool, { tenantId, name: "admin", role: "admin" })).secret;
    const client = s.client(WebhookService, "connect", key);
    const made: string[] = [];
    for (let i = 0; i < 5; i++) {
      made.push((await client.createEndpoint({ url: `http://127.0.0.1:${i + 1}/` })).endpoint!.endpointId);
    }
    const seen: string[] = [];
    let pageToken = "";
    do {
      const page = await client.listEndpoints({ pageSize: 2, pageToken });
      expect(page.endpoints.length).toBeLessThanOrEqual(2);
      seen.push(...page.endpoints.map((e) => e.endpointId));
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    expect(seen).toEqual([...made].reverse());
  });

  it("keeps tenants apart and needs the admin role", async () => {
    const { endpoint } = await hooks().createEndpoint({ url: "http://127.0.0.1:1/mine" });
    const { tenantId } = await createTenant(s.app.pool, "other-tenant");
    const otherKey = (await createApiKey(s.app.pool, { tenantId, name: "admin", role: "admin" })).secret;
    const other = s.client(WebhookService, "connect", otherKey);
    const listed = await other.listEndpoints({});
    expect(listed.endpoints.map((e) => e.endpointId)).not.toContain(endpoint!.endpointId);
    const { code } = await failure(other.updateEndpoint({ endpointId: endpoint!.endpointId, enabled: false }));
    expect(code).toBe(Code.NotFound);
    const writer = s.client(WebhookService, "connect", s.keys.writer);
    const denied = await failure(writer.listEndpoints({}));
    expect(denied.code).toBe(Code.PermissionDenied);
  });

  it(`refuses more than ${endpoints_per_tenant_max} endpoints per tenant`, async () => {
    const { tenantId } = await createTenant(s.app.pool, "busy-tenant");
    const key = (await createApiKey(s.app.pool, { tenantId, name: "admin", role: "admin" })).secret;
    const client = s.client(WebhookService, "connect", key);
    await Promise.all(
      Array.from({ length: endpoints_per_tenant_max + 5 }, (_, i) =>
        client.createEndpoint({ url: `http://127.0.0.1:${1000 + i}/` }).catch((e: unknown) => ConnectError.from(e)),
      ),
    );
    let count = 0;
    let pageToken = "";
    do {
      const page = await client.listEndpoints({ pageSize: 500, pageToken });
      count += page.endpoints.length;
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    expect(count).toBe(endpoints_per_tenant_max);
    const { code, detail } = await failure(client.createEndpoint({ url: "http://127.0.0.1:1/" }));
    expect(code).toBe(Code.ResourceExhausted);
    expect(detail.reason).toBe("WEBHOOK_ENDPOINT_LIMIT");
  });
});
