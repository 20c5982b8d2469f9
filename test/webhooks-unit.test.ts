// Goal: the small pure rules behind webhooks hold on their own: the retry verdict and jitter,
// Retry-After parsing, event type filters (and that the SQL used to fan events out matches
// exactly what the TypeScript matcher matches), the config parsing of the webhook variables,
// that signatures made by the worker verify with the `standardwebhooks` library, and that the
// address guard refuses IPv6 outside global unicast (IPv4-compatible ::/96 included).
// Method: direct calls with fixed inputs; the filter comparison evaluates the SQL expression in
// a fresh database for every filter × type pair.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Webhook } from "standardwebhooks";
import {
  checkEventTypeFilters,
  KNOWN_EVENT_TYPES,
  matchesEventType,
  sqlMatchesEventType,
} from "@holdfast/webhooks-core/event-types";
import { newSigningSecret } from "@holdfast/webhooks-core/secrets";
import { createUrlPolicy } from "@holdfast/webhooks-core/url-policy";
import { readWebhookSettings } from "@holdfast/webhooks/config";
import { parseRetryAfter, RETRY_AFTER_MS_MAX, verdictOf } from "@holdfast/webhooks/schedule";
import { signatureHeaders } from "@holdfast/webhooks/signing";
import { createTestDatabase, type TestDatabase } from "./support/db.js";

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db?.drop();
});

const failed = (status: number | null, retryAfterMs: number | null = null) => ({ status, retryAfterMs, error: "x", latencyMs: 1 });

describe("retry verdicts", () => {
  const schedule = [1000, 60_000];
  it("succeeds on any 2xx and nothing else", () => {
    for (const status of [200, 201, 204, 299]) expect(verdictOf(failed(status), 1, schedule).kind).toBe("succeeded");
    for (const status of [null, 199, 301, 302, 400, 429, 500, 503]) expect(verdictOf(failed(status), 1, schedule).kind).toBe("retry");
  });
  it("follows the schedule with ±20% jitter, then fails", () => {
    expect(verdictOf(failed(500), 1, schedule, () => 0)).toEqual({ kind: "retry", delayMs: 800, gone: false });
    expect(verdictOf(failed(500), 1, schedule, () => 1)).toEqual({ kind: "retry", delayMs: 1200, gone: false });
    expect(verdictOf(failed(500), 2, schedule, () => 0.5)).toEqual({ kind: "retry", delayMs: 60_000, gone: false });
    expect(verdictOf(failed(500), 3, schedule)).toEqual({ kind: "failed", gone: false });
  });
  it("marks 410 as gone, and lets a longer Retry-After win", () => {
    expect(verdictOf(failed(410), 1, schedule, () => 0.5)).toEqual({ kind: "retry", delayMs: 1000, gone: true });
    expect(verdictOf(failed(410), 3, schedule)).toEqual({ kind: "failed", gone: true });
    expect(verdictOf(failed(429, 30_000), 1, schedule, () => 0.5)).toMatchObject({ delayMs: 30_000 });
    expect(verdictOf(failed(429, 10), 1, schedule, () => 0.5)).toMatchObject({ delayMs: 1000 });
  });
  it("reads Retry-After as seconds or an HTTP date, capped", () => {
    const now = new Date("2026-01-01T00:00:00Z");
    expect(parseRetryAfter("120", now)).toBe(120_000);
    expect(parseRetryAfter(" 0 ", now)).toBe(0);
    expect(parseRetryAfter("Thu, 01 Jan 2026 00:00:30 GMT", now)).toBe(30_000);
    expect(parseRetryAfter("Wed, 31 Dec 2025 00:00:30 GMT", now)).toBe(0);
    expect(parseRetryAfter("9999999999", now)).toBe(RETRY_AFTER_MS_MAX);
    for (const junk of [undefined, "", "soon", "-5", "1.5"]) expect(parseRetryAfter(junk, now)).toBeNull();
  });
});

describe("event type filters", () => {
  it("accepts known types and kind wildcards, refuses the rest", () => {
    expect(checkEventTypeFilters([])).toBeNull();
    expect(checkEventTypeFilters(["holdfast.hold.*", "holdfast.deposit.completed", "holdfast.webhook.*"])).toBeNull();
    for (const bad of [["holdfast.*"], ["*"], ["holdfast.hold"], ["holdfast.hold.captured.*"], ["HOLDFAST.HOLD.CAPTURED"]]) {
      expect(checkEventTypeFilters(bad), bad[0]).not.toBeNull();
    }
    expect(checkEventTypeFilters(Array.from({ length: 33 }, () => "holdfast.hold.*"))).toMatch(/at most 32/);
  });

  it("matches in SQL exactly as in TypeScript", async () => {
    const filterSets = [[], ["holdfast.hold.*"], ["holdfast.hold.captured"], ["holdfast.deposit.completed", "holdfast.transfer.*"], ["holdfast.webhook.*"]];
    const types = [...KNOWN_EVENT_TYPES, "holdfast.holdx.created", "holdfast.hold"];
    for (const filters of filterSets) {
      const { rows } = await db.pool.query<{ type: string; matches: boolean }>(
        `select t as type, ${sqlMatchesEventType("$1::text[]", "t")} as matches from unnest($2::text[]) t`,
        [filters, types],
      );
      for (const row of rows) expect(row.matches, `${JSON.stringify(filters)} ${row.type}`).toBe(matchesEventType(filters, row.type));
    }
  });
});

describe("webhook configuration", () => {
  it("has a schedule of about a day by default", () => {
    const config = readWebhookSettings({});
    expect(config.retryScheduleMs).toHaveLength(7);
    const totalHours = config.retryScheduleMs.reduce((a, b) => a + b, 0) / 3_600_000;
    expect(totalHours).toBeGreaterThan(24);
    expect(totalHours).toBeLessThan(30);
    expect(config.allowedNetworks).toEqual([]);
  });
  it("parses schedules and networks, and names the variable when they are malformed", () => {
    const config = readWebhookSettings({ HOLDFAST_WEBHOOK_RETRY_SCHEDULE: "10ms, 2s,3m,1h", HOLDFAST_WEBHOOK_ALLOWED_NETWORKS: "127.0.0.0/8, ::1, 10.1.2.3" });
    expect(config.retryScheduleMs).toEqual([10, 2000, 180_000, 3_600_000]);
    expect(config.allowedNetworks).toEqual(["127.0.0.0/8", "::1/128", "10.1.2.3/32"]);
    for (const [name, value] of [
      ["HOLDFAST_WEBHOOK_RETRY_SCHEDULE", "5x"],
      ["HOLDFAST_WEBHOOK_RETRY_SCHEDULE", "25h"],
      ["HOLDFAST_WEBHOOK_RETRY_SCHEDULE", "0ms"],
      ["HOLDFAST_WEBHOOK_RETRY_SCHEDULE", Array.from({ length: 21 }, () => "1s").join(",")],
      ["HOLDFAST_WEBHOOK_ALLOWED_NETWORKS", "10.0.0.0/33"],
      ["HOLDFAST_WEBHOOK_ALLOWED_NETWORKS", "example.com"],
      ["HOLDFAST_WEBHOOK_ENDPOINT_CONCURRENCY", "0"],
      ["HOLDFAST_WEBHOOK_TIMEOUT_MS", "50"],
    ] as const) {
      expect(() => readWebhookSettings({ [name]: value }), `${name}=${value}`).toThrow(name);
    }
  });
});

describe("signatures", () => {
  it("verify with the standardwebhooks library, with either secret during a rotation", () => {
    const [a, b] = [newSigningSecret(), newSigningSecret()];
    const body = JSON.stringify({ type: "holdfast.webhook.test", timestamp: "2026-01-01T00:00:00.000Z", data: {} });
    const headers = signatureHeaders("01938f2b-7c1e-7a51-9d0e-5b2f6c1d8e90", body, [b, a], new Date());
    expect(new Webhook(a).verify(body, headers)).toEqual(JSON.parse(body));
    expect(new Webhook(b).verify(body, headers)).toEqual(JSON.parse(body));
    expect(() => new Webhook(newSigningSecret()).verify(body, headers)).toThrow();
    expect(() => new Webhook(a).verify(`${body} `, headers)).toThrow();
  });
});

describe("the webhook address guard", () => {
  const open = createUrlPolicy([]);
  const loopbackTrusted = createUrlPolicy(["127.0.0.0/8", "::1/128"]);

  it("refuses IPv4-compatible IPv6 (::/96) and other IPv6 outside global unicast, even with loopback trusted", async () => {
    for (const url of ["https://[::127.0.0.1]/", "https://[::7f00:1]/", "https://[::a00:1]/hooks", "https://[::808:808]/", "https://[4000::1]/"]) {
      for (const policy of [open, loopbackTrusted]) {
        const check = await policy.checkUrl(url);
        expect(check.ok, url).toBe(false);
      }
    }
    expect(open.addressProblem("::7f00:1", false)).toContain("::/96");
  });

  it("still accepts public IPv6 and IPv4, and what the operator trusts", async () => {
    for (const url of ["https://[2606:4700:4700::1111]/", "https://[2001:4860:4860::8888]/hooks", "https://93.184.216.34/"]) {
      expect((await open.checkUrl(url)).ok, url).toBe(true);
    }
    expect(createUrlPolicy(["::/96"]).addressProblem("::7f00:1", true)).toBeNull();
  });
});
