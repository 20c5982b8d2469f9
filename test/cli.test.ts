// Goal: the holdfast CLI's everyday gaps are closed: `tenant list`, `key list [--tenant]`,
// every --tenant taking a name or an id, `key revoke` taking a whole key, `events tail --type`
// refusing a type that does not exist instead of waiting forever, errors that name the URL
// they could not reach (never its password), and `billing backfill --sink X` needing only
// sink X's secret; and one variable, HOLDFAST_API_KEY, for the API key in every doc and
// example.
// Method: the CLI's main() in process, on a database of this file's own; NATS and PostgreSQL
// "unreachable" are loopback ports nothing listens on; the billing configuration is a file
// with two sinks, of which only one has its secret set. The reserve → capture example runs
// under tsx against a real ledger with HOLDFAST_API_KEY set, and without it; the README, docs/
// and examples/ are searched for any other name of the key.
import { execFile } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { main } from "@holdfast/cli/main";
import { freePort } from "@holdfast/common/net";
import { createTestDatabase, type TestDatabase } from "./support/db.js";
import { startTestServer } from "./support/server.js";

let db: TestDatabase;
let dir: string;

beforeAll(async () => {
  db = await createTestDatabase();
  dir = await mkdtemp(join(tmpdir(), "holdfast-cli-"));
});
afterAll(async () => {
  await db?.drop();
  await rm(dir, { recursive: true, force: true });
});

/** Runs the CLI in process on this file's database and returns its exit code and output. */
async function cli(...args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(["node", "holdfast", "--database-url", db.url, ...args], {
    out: (line) => out.push(line),
    err: (line) => err.push(line),
  });
  return { code, out, err, text: out.join("\n"), error: err.join("\n") };
}

/** Creates a tenant through the CLI and returns its id and admin key. */
async function tenant(name: string): Promise<{ tenantId: string; keyId: string; apiKey: string }> {
  const run = await cli("tenant", "create", name, "--json");
  expect(run.code, run.error).toBe(0);
  return JSON.parse(run.text) as { tenantId: string; keyId: string; apiKey: string };
}

describe("holdfast tenant list and key list", () => {
  it("lists tenants with their usable keys, readable and as JSON", async () => {
    const acme = await tenant("acme-list");
    const globex = await tenant("globex-list");
    const table = await cli("tenant", "list");
    expect(table.code).toBe(0);
    expect(table.out[0]).toMatch(/^TENANT ID +NAME +CREATED +KEYS$/);
    expect(table.text).toMatch(new RegExp(`${acme.tenantId} +acme-list +\\S+ +1`));
    const json = JSON.parse((await cli("tenant", "list", "--json")).text) as { tenantId: string; name: string; activeKeys: number }[];
    expect(json).toEqual(expect.arrayContaining([
      expect.objectContaining({ tenantId: acme.tenantId, name: "acme-list", activeKeys: 1 }),
      expect.objectContaining({ tenantId: globex.tenantId, name: "globex-list", activeKeys: 1 }),
    ]));
  });

  it("lists one tenant's keys by name or id, and every tenant's without --tenant", async () => {
    const t = await tenant("keys-by-name");
    const other = await tenant("keys-other");
    const created = await cli("key", "create", "--tenant", "keys-by-name", "--role", "reader", "--name", "dashboard", "--json");
    expect(created.code, created.error).toBe(0);
    const reader = JSON.parse(created.text) as { tenantId: string; keyId: string };
    expect(reader.tenantId).toBe(t.tenantId);

    for (const ref of ["keys-by-name", t.tenantId]) {
      const keys = JSON.parse((await cli("key", "list", "--tenant", ref, "--json")).text) as { keyId: string; role: string; status: string }[];
      expect(keys.map((k) => [k.keyId, k.role, k.status])).toEqual([[t.keyId, "admin", "active"], [reader.keyId, "reader", "active"]]);
    }
    const all = await cli("key", "list");
    expect(all.out[0]).toMatch(/^KEY ID +TENANT ID +NAME +ROLE +WALLET +STATUS +CREATED +LAST USED$/);
    for (const keyId of [t.keyId, reader.keyId, other.keyId]) expect(all.text).toContain(keyId);
    // Secrets are never listed.
    expect(all.text).not.toContain(t.apiKey);
  });

  it("reads --tenant by name in the other commands too (verify)", async () => {
    await tenant("verify-by-name");
    const run = await cli("verify", "--tenant", "verify-by-name");
    expect(run.error).not.toContain("must be a tenant id");
    expect(run.code, run.error).toBe(0);
  });

  it("refuses a --tenant that names no tenant, saying how to find them", async () => {
    const run = await cli("key", "list", "--tenant", "no-such-tenant");
    expect(run.code).toBe(1);
    expect(run.error).toContain('--tenant must be a tenant id or a tenant\'s name, and no tenant is named "no-such-tenant" (holdfast tenant list shows them)');
  });
});

describe("holdfast key revoke", () => {
  it("takes the whole key and revokes its key id", async () => {
    const t = await tenant("revoke-full-key");
    const run = await cli("key", "revoke", "--tenant", "revoke-full-key", t.apiKey);
    expect(run.code, run.error).toBe(0);
    expect(run.text).toMatch(new RegExp(`^Revoked key ${t.keyId} \\(the id of the key given\\) at `));
    const keys = JSON.parse((await cli("key", "list", "--tenant", t.tenantId, "--json")).text) as { keyId: string; status: string }[];
    expect(keys).toEqual([expect.objectContaining({ keyId: t.keyId, status: "revoked" })]);
  });

  it("takes the key id, and names the tenant and key it did not find", async () => {
    const t = await tenant("revoke-key-id");
    expect((await cli("key", "revoke", "--tenant", t.tenantId, t.keyId)).code).toBe(0);
    const missing = await cli("key", "revoke", "--tenant", "revoke-key-id", "0123456789abcdef");
    expect(missing.code).toBe(1);
    expect(missing.error).toContain(`tenant ${t.tenantId} has no key 0123456789abcdef`);
  });
});

describe("holdfast key create: expiry, the key's own rate, and the audit log", () => {
  type AuditRow = { key_id: string | null; action: string; target: string; details: Record<string, unknown> };
  const auditOf = async (tenantId: string): Promise<AuditRow[]> =>
    (await db.pool.query<AuditRow>("select key_id, action, target, details from audit_log where tenant_id = $1 order by audit_id", [tenantId])).rows;
  const keyRow = async (keyId: string) =>
    (await db.pool.query<{ expires_at: Date | null; rate_per_second: number | null; rate_burst: number | null }>(
      "select expires_at, rate_per_second, rate_burst from api_keys where key_id = $1", [keyId])).rows[0];

  it("--expires-at and --requests-per-second/--burst set the key's expiry and rate, and the creation is audited with no acting key", async () => {
    const t = await tenant("key-create-flags");
    // A year ahead, to the second: the key store refuses the past and more than 10 years ahead.
    const expiry = new Date(Math.floor(Date.now() / 1000) * 1000 + 365 * 86_400_000);
    const run = await cli("key", "create", "--tenant", "key-create-flags", "--role", "writer", "--expires-at", expiry.toISOString().replace(".000Z", "Z"),
      "--requests-per-second", "50", "--burst", "80", "--json");
    expect(run.code, run.error).toBe(0);
    const { keyId } = JSON.parse(run.text) as { keyId: string };
    expect(await keyRow(keyId)).toEqual({ expires_at: expiry, rate_per_second: 50, rate_burst: 80 });
    expect(await auditOf(t.tenantId)).toEqual([
      { key_id: null, action: "api_key.created", target: t.keyId, details: { name: "admin", role: "admin", wallet_id: null, expires_at: null } },
      {
        key_id: null, action: "api_key.created", target: keyId,
        details: { name: "writer", role: "writer", wallet_id: null, expires_at: expiry.toISOString(), rate_limit: { requests_per_second: 50, burst: 80 } },
      },
    ]);
  });

  it("--expires-in counts from now, and a rate without --burst gets one second's worth, as CreateApiKey does", async () => {
    await tenant("key-create-expires-in");
    const before = Date.now();
    const run = await cli("key", "create", "--tenant", "key-create-expires-in", "--role", "reader", "--expires-in", "30d", "--requests-per-second", "7", "--json");
    expect(run.code, run.error).toBe(0);
    const row = await keyRow((JSON.parse(run.text) as { keyId: string }).keyId);
    const thirtyDaysMs = 30 * 86_400_000;
    expect(row?.expires_at?.getTime()).toBeGreaterThanOrEqual(before + thirtyDaysMs);
    expect(row?.expires_at?.getTime()).toBeLessThanOrEqual(Date.now() + thirtyDaysMs);
    expect(row).toMatchObject({ rate_per_second: 7, rate_burst: 7 });
  });

  it("refuses a bad time, duration or rate, both expiry flags, a burst alone, and an expiry in the past, creating nothing", async () => {
    const t = await tenant("key-create-refusals");
    const create = (...flags: string[]) => cli("key", "create", "--tenant", t.tenantId, "--role", "writer", ...flags);
    const cases: [string[], RegExp][] = [
      [["--expires-at", "2099-01-02 03:04"], /--expires-at.*must be an RFC 3339 time/],
      [["--expires-at", "2099-01-02T03:04:05"], /must be an RFC 3339 time/],
      [["--expires-in", "30 days"], /--expires-in.*must be a positive whole number and s, m, h or d/],
      [["--expires-in", "1d", "--expires-at", "2099-01-02T03:04:05Z"], /cannot be used with/],
      [["--requests-per-second", "1.5"], /--requests-per-second.*must be a whole number/],
      [["--burst", "10"], /--burst needs --requests-per-second/],
      [["--requests-per-second", "0"], /rate_limit\.requests_per_second/],
      [["--expires-at", "2000-01-01T00:00:00Z"], /expires_at/],
    ];
    for (const [flags, message] of cases) {
      const run = await create(...flags);
      expect(run.code, flags.join(" ")).not.toBe(0);
      expect(run.error, flags.join(" ")).toMatch(message);
    }
    const keys = JSON.parse((await cli("key", "list", "--tenant", t.tenantId, "--json")).text) as unknown[];
    expect(keys).toHaveLength(1);
    expect((await auditOf(t.tenantId)).map((r) => r.target)).toEqual([t.keyId]);
  });

  it("key revoke is audited as api_key.revoked with no acting key; a key not found leaves no entry", async () => {
    const t = await tenant("key-revoke-audit");
    expect((await cli("key", "revoke", "--tenant", t.tenantId, t.keyId)).code).toBe(0);
    expect((await cli("key", "revoke", "--tenant", t.tenantId, "0123456789abcdef")).code).toBe(1);
    expect((await auditOf(t.tenantId)).map(({ key_id, action, target }) => ({ key_id, action, target }))).toEqual([
      { key_id: null, action: "api_key.created", target: t.keyId },
      { key_id: null, action: "api_key.revoked", target: t.keyId },
    ]);
  });
});

describe("errors name what they could not reach", () => {
  it("names the PostgreSQL URL without its password", async () => {
    const port = await freePort();
    const out: string[] = [];
    const code = await main(["node", "holdfast", "--database-url", `postgres://holdfast:s3cret@127.0.0.1:${port}/holdfast`, "tenant", "list"], {
      out: (line) => out.push(line),
      err: (line) => out.push(line),
    });
    expect(code).toBe(1);
    expect(out.join("\n")).toContain(`cannot connect to PostgreSQL at postgres://holdfast:***@127.0.0.1:${port}/holdfast`);
    expect(out.join("\n")).not.toContain("s3cret");
  });

  it("events tail names the NATS URL without its credentials", async () => {
    const port = await freePort();
    const run = await cli("events", "tail", "--nats-url", `nats://user:s3cret@127.0.0.1:${port}`, "--limit", "1");
    expect(run.code).toBe(1);
    expect(run.error).toContain(`cannot connect to NATS at nats://127.0.0.1:${port}`);
    expect(run.error).not.toContain("s3cret");
  });
});

describe("holdfast events tail --type", () => {
  it("refuses a type nothing publishes, at once and without NATS, listing the known ones", async () => {
    const port = await freePort();
    for (const type of ["hold.capturd", "holdfast.webhook.test", "wallet.deleted", "nothing"]) {
      const run = await cli("events", "tail", "--nats-url", `nats://127.0.0.1:${port}`, "--type", type);
      expect(run.code, type).toBe(1);
      expect(run.error).toContain(`--type "${type}" is not an event type`);
      expect(run.error).toContain("hold.captured");
      // Refused before connecting: the unreachable URL is never mentioned.
      expect(run.error).not.toContain("cannot connect");
    }
  });

  it("accepts a type, a kind and the webhook filters' spellings of them", async () => {
    const { tailSubject } = await import("@holdfast/cli/events-tail");
    expect(tailSubject({ type: "holdfast.hold.*" })).toBe("holdfast.events.*.*.hold.*");
    expect(tailSubject({ type: "hold.*" })).toBe("holdfast.events.*.*.hold.*");
    expect(tailSubject({ type: "deposit" })).toBe("holdfast.events.*.*.deposit.*");
    expect(tailSubject({ type: "wallet.updated" })).toBe("holdfast.events.*.*.wallet.updated");
  });
});

describe("holdfast billing backfill --sink", () => {
  /** Two sinks, each with its own secret variable; neither variable is set by the test runner. */
  async function writeConfig(tenantId: string): Promise<string> {
    const sink = (name: string, secretEnv: string) => ({
      name,
      type: "http",
      endpoint: "http://127.0.0.1:9/usage",
      secret_env: secretEnv,
      tenants: [tenantId],
    });
    const file = join(dir, "billing.json");
    await writeFile(file, JSON.stringify({ sinks: [sink("first", "HOLDFAST_TEST_FIRST_SECRET"), sink("second", "HOLDFAST_TEST_SECOND_SECRET")] }));
    return file;
  }

  it("needs only the named sink's secret", async () => {
    const t = await tenant("backfill-one-secret");
    const file = await writeConfig(t.tenantId);
    process.env["HOLDFAST_TEST_FIRST_SECRET"] = "first-secret";
    try {
      const first = await cli("billing", "backfill", "--sink", "first", "--since", "2020-01-01T00:00:00Z", "--config", file, "--tenant", "backfill-one-secret");
      // Nothing on stderr but the progress bar.
      expect(first.err.filter((l) => !l.startsWith("["))).toEqual([]);
      expect(first.code).toBe(0);
      expect(first.text).toContain("backfill to first: 0 usage records");
      // The second sink's secret is still required to send to the second sink.
      const second = await cli("billing", "backfill", "--sink", "second", "--since", "2020-01-01T00:00:00Z", "--config", file);
      expect(second.code).toBe(1);
      expect(second.error).toContain("HOLDFAST_TEST_SECOND_SECRET (secret_env) is not set");
      const unknown = await cli("billing", "backfill", "--sink", "third", "--since", "2020-01-01T00:00:00Z", "--config", file);
      expect(unknown.error).toContain('no sink named "third"');
      expect(unknown.error).toContain("(sinks: first, second)");
    } finally {
      delete process.env["HOLDFAST_TEST_FIRST_SECRET"];
    }
  });
});

describe("HOLDFAST_API_KEY, the one name of the API key", () => {
  /** Runs an example from source under tsx, as its header says to. */
  function runExample(file: string, args: string[], env: Record<string, string>) {
    return promisify(execFile)(process.execPath, ["--conditions=source", "--import", "tsx", file, ...args], {
      env: { PATH: process.env["PATH"], ...env },
      timeout: 30_000,
    });
  }

  it("is what the reserve → capture example sends, and it says so when the key is missing", async () => {
    const server = await startTestServer();
    try {
      const { stdout } = await runExample("examples/02-reserve-capture.ts", [server.app.url, "example_wallet"], { HOLDFAST_API_KEY: server.keys.writer });
      expect(stdout).toContain("reserved 500 USD on example_wallet");
      expect(stdout).toContain("available now 877");
      const missing = await runExample("examples/02-reserve-capture.ts", [server.app.url], {}).catch((err: { code: number; stderr: string }) => err);
      expect(missing).toMatchObject({ code: 1 });
      expect((missing as { stderr: string }).stderr).toContain("set HOLDFAST_API_KEY");
    } finally {
      await server.close();
    }
  }, 60_000);

  it("is the only name the README, docs/ and examples/ give it", async () => {
    const files = ["README.md", "CONTRIBUTING.md", ...(await readdir("docs")).map((f) => `docs/${f}`), ...(await readdir("examples")).filter((f) => f.endsWith(".ts")).map((f) => `examples/${f}`)];
    for (const file of files.filter((f) => /\.(md|ts)$/.test(f))) {
      const text = await readFile(file, "utf8");
      expect(text, file).not.toMatch(/\b(HOLDFAST_KEY|HOLDFAST_ADMIN_KEY|HF_KEY|HF_API_KEY)\b/);
      // Every bearer header a doc builds from a variable uses HOLDFAST_API_KEY; every example
      // that sends one reads it from there.
      if (file.endsWith(".md")) {
        for (const match of text.matchAll(/Bearer \$\{?([A-Za-z_.[\]"]+)/g)) {
          expect(match[1], `${file}: ${match[0]}`).toMatch(/HOLDFAST_API_KEY/);
        }
      } else if (text.includes("authorization")) {
        expect(text, file).toContain('process.env["HOLDFAST_API_KEY"]');
      }
    }
  });
});
