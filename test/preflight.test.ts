// Goal: the up-front check in test/global-setup.ts says clearly what a machine lacks before any
// test runs: nats-server missing from PATH is one problem naming the package to install, and a
// PostgreSQL that does not answer locally leads to the embedded one rather than to an error.
//
// Method: run checkTestServers with environments made up for the purpose (a PATH of empty or
// hand-made folders, a local port nobody listens on); it only probes, so nothing is started.
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { freePort } from "@holdfast/common/net";
import { isEmbeddedPostgresAvailable } from "@holdfast/dev-servers/embedded-postgres";

import { checkTestServers } from "./global-setup.js";

/** A URL the check takes as given, so that these cases never depend on the machine's PostgreSQL. */
const GIVEN_DATABASE_URL = "postgres://postgres:secret@db.invalid:5432/postgres";

describe("the tests' preflight check", () => {
  let emptyDir: string;
  let binDir: string;

  beforeAll(async () => {
    emptyDir = await mkdtemp(path.join(tmpdir(), "holdfast-preflight-empty-"));
    binDir = await mkdtemp(path.join(tmpdir(), "holdfast-preflight-bin-"));
    const fake = path.join(binDir, "nats-server");
    await writeFile(fake, "#!/bin/sh\nexit 0\n");
    await chmod(fake, 0o755);
  });

  afterAll(async () => {
    await rm(emptyDir, { recursive: true, force: true });
    await rm(binDir, { recursive: true, force: true });
  });

  it("reports a missing nats-server as one problem that names the package to install", async () => {
    const report = await checkTestServers({ PATH: emptyDir, HOLDFAST_TEST_DATABASE_URL: GIVEN_DATABASE_URL });
    expect(report.natsServer).toBeUndefined();
    expect(report.problems).toHaveLength(1);
    expect(report.problems[0]).toContain("nats-server is not on PATH");
    expect(report.problems[0]).toContain("apt-get install nats-server");
    expect(report.lines).toContain("  nats-server  MISSING: not on PATH");
  });

  it("finds nats-server on PATH and takes HOLDFAST_TEST_DATABASE_URL as given, password hidden", async () => {
    const report = await checkTestServers({ PATH: `${emptyDir}${path.delimiter}${binDir}`, HOLDFAST_TEST_DATABASE_URL: GIVEN_DATABASE_URL });
    expect(report.problems).toEqual([]);
    expect(report.natsServer).toBe(path.join(binDir, "nats-server"));
    expect(report.database).toEqual({ kind: "url", adminUrl: GIVEN_DATABASE_URL });
    expect(report.lines.join("\n")).not.toContain("secret");
  });

  it("falls back to the embedded PostgreSQL when nothing answers on the local port", async () => {
    const closedPort = await freePort();
    const report = await checkTestServers({ PATH: binDir, HOLDFAST_TEST_PG_PORT: String(closedPort) });
    if (await isEmbeddedPostgresAvailable()) {
      expect(report.problems).toEqual([]);
      expect(report.database).toEqual({ kind: "embedded", probedPort: closedPort });
    } else {
      expect(report.database).toBeUndefined();
      expect(report.problems.join("\n")).toContain("HOLDFAST_TEST_DATABASE_URL");
    }
  });

  it("refuses a HOLDFAST_TEST_PG_PORT that is not a port", async () => {
    const report = await checkTestServers({ PATH: binDir, HOLDFAST_TEST_PG_PORT: "54x" });
    expect(report.database).toBeUndefined();
    expect(report.problems).toEqual([expect.stringContaining("HOLDFAST_TEST_PG_PORT must be a TCP port")]);
  });
});
