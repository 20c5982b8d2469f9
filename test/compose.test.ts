// Goal: catch mistakes in docker-compose.yml without a docker binary: a service without a health
// check, a dependency that only waits for a container to exist instead of being healthy, a
// command that points at no entry point, an environment variable no process reads (a typo is
// ignored silently), or a database URL that does not match the PostgreSQL service.
//
// Method: parse the file with the yaml library and check its structure. Entry points are
// compiled files (dist/), so a command must name <package>/dist/main.js of a workspace package
// whose src/main.ts exists. The variables a process may be given are the names its own package,
// and the @holdfast packages it depends on (transitively), spell out in their sources. No
// docker engine, database or network is involved.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { describe, expect, it } from "vitest";
import { parse } from "yaml";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

interface Healthcheck {
  test?: string[] | string;
  disable?: boolean;
}
interface Service {
  image?: string;
  build?: { context?: string; dockerfile?: string };
  command?: string[] | string;
  environment?: Record<string, unknown>;
  ports?: string[];
  depends_on?: Record<string, { condition?: string }> | string[];
  healthcheck?: Healthcheck;
  profiles?: string[];
  stop_grace_period?: string;
}

const compose = parse(readFileSync(path.join(ROOT, "docker-compose.yml"), "utf8")) as { services: Record<string, Service> };
const services = compose.services;
/** The services built from this repository's Dockerfile: the Holdfast processes. */
const holdfastServices = Object.entries(services).filter(([, service]) => service.build !== undefined);

/** Environment variable names as string literals in TypeScript sources. */
const ENV_NAME_LITERAL = /["'`]([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)["'`]/g;

const readJson = (file: string): Record<string, unknown> => JSON.parse(readFileSync(path.join(ROOT, file), "utf8")) as Record<string, unknown>;

/** Workspace package folders by package name, from the root package.json's patterns. */
function workspacePackages(): Map<string, string> {
  const patterns = readJson("package.json")["workspaces"] as string[];
  const dirs = patterns.flatMap((pattern) =>
    pattern.endsWith("/*")
      ? readdirSync(path.join(ROOT, pattern.slice(0, -2))).map((name) => `${pattern.slice(0, -2)}/${name}`)
      : [pattern],
  );
  const byName = new Map<string, string>();
  for (const dir of dirs.filter((d) => existsSync(path.join(ROOT, d, "package.json")))) {
    byName.set(readJson(`${dir}/package.json`)["name"] as string, dir);
  }
  return byName;
}
const packages = workspacePackages();

/** The package folder and its @holdfast dependencies' folders, transitively. */
function packageClosure(dir: string, seen = new Set<string>()): Set<string> {
  if (seen.has(dir)) return seen;
  seen.add(dir);
  const dependencies = Object.keys((readJson(`${dir}/package.json`)["dependencies"] ?? {}) as Record<string, string>);
  for (const name of dependencies.filter((n) => n.startsWith("@holdfast/"))) {
    const dependencyDir = packages.get(name);
    if (dependencyDir !== undefined) packageClosure(dependencyDir, seen);
  }
  return seen;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(path.join(ROOT, dir), { recursive: true, encoding: "utf8" })
    .filter((file) => file.endsWith(".ts") && !file.endsWith(".d.ts"))
    .map((file) => path.join(ROOT, dir, file));
}

/** Every variable name the sources of `packageDir` and its @holdfast dependencies spell out. */
function envNamesRead(packageDir: string): Set<string> {
  const names = new Set<string>();
  for (const dir of packageClosure(packageDir)) {
    if (!existsSync(path.join(ROOT, dir, "src"))) continue;
    for (const file of sourceFiles(`${dir}/src`)) {
      for (const match of readFileSync(file, "utf8").matchAll(ENV_NAME_LITERAL)) names.add(match[1] ?? "");
    }
  }
  return names;
}

const asList = (value: string[] | string | undefined): string[] => (Array.isArray(value) ? value : value === undefined ? [] : [value]);
const entryOf = (service: Service): string => asList(service.command)[1] ?? "";
/** `services/ledger/dist/main.js` → `services/ledger`. */
const packageDirOf = (entry: string): string => entry.replace(/\/dist\/main\.js$/, "");

describe("docker-compose.yml", () => {
  it("runs PostgreSQL 16, NATS with JetStream, the ledger and the workers; billing-stream behind a profile", () => {
    expect(Object.keys(services)).toEqual(expect.arrayContaining(["postgres", "nats", "ledger", "hold-expiry", "webhooks"]));
    expect(services["postgres"]?.image).toMatch(/^postgres:16(-|$)/);
    expect(services["nats"]?.image).toMatch(/^nats:2(-|$)/);
    expect(asList(services["nats"]?.command)).toContain("-js");
    expect(entryOf(services["ledger"] ?? {})).toBe("services/ledger/dist/main.js");
    expect(services["billing-stream"]?.profiles).toEqual(["billing"]);
    for (const [name, service] of Object.entries(services)) {
      if (name !== "billing-stream") expect(service.profiles, name).toBeUndefined();
    }
  });

  it("gives every service a health check", () => {
    for (const [name, service] of Object.entries(services)) {
      expect(service.healthcheck?.disable, name).not.toBe(true);
      const test = asList(service.healthcheck?.test);
      expect(test.length, `${name} has no health check`).toBeGreaterThan(1);
      expect(test[0], name).toMatch(/^(CMD|CMD-SHELL)$/);
      expect(test.slice(1).join(" ").trim(), name).not.toBe("");
    }
    expect(asList(services["postgres"]?.healthcheck?.test)).toContain("pg_isready");
    const monitorPort = asList(services["nats"]?.command).at(asList(services["nats"]?.command).indexOf("-m") + 1);
    expect(asList(services["nats"]?.healthcheck?.test).join(" ")).toContain(`:${monitorPort}/healthz`);
    const ledgerPort = String(services["ledger"]?.environment?.["HOLDFAST_PORT"]);
    expect(asList(services["ledger"]?.healthcheck?.test).join(" ")).toContain(`:${ledgerPort}/readyz`);
    expect(services["ledger"]?.ports).toContain(`127.0.0.1:${ledgerPort}:${ledgerPort}`);
  });

  it("waits for dependencies to be healthy, not merely started, and names only services that exist", () => {
    for (const [name, service] of Object.entries(services)) {
      if (service.depends_on === undefined) continue;
      expect(Array.isArray(service.depends_on), `${name}: the short form waits only for the container to start`).toBe(false);
      for (const [target, { condition }] of Object.entries(service.depends_on as Record<string, { condition?: string }>)) {
        expect(services[target], `${name} depends on ${target}`).toBeDefined();
        expect(condition, `${name} → ${target}`).toBe("service_healthy");
      }
    }
    // The ledger applies the migrations; the workers must not start on an empty database.
    for (const [name, service] of holdfastServices.filter(([n]) => n !== "ledger")) {
      expect(Object.keys(service.depends_on ?? {}), name).toContain("ledger");
    }
  });

  it("builds every Holdfast process from the root Dockerfile and runs a compiled entry point that exists", () => {
    expect(holdfastServices.map(([name]) => name)).toEqual(expect.arrayContaining(["ledger", "hold-expiry", "webhooks", "billing-stream"]));
    const images = new Set(holdfastServices.map(([, service]) => service.image));
    expect(images.size, "one image for every process, as the Dockerfile says").toBe(1);
    for (const [name, service] of holdfastServices) {
      expect(service.build, name).toEqual({ context: ".", dockerfile: "Dockerfile" });
      const command = asList(service.command);
      expect(command, name).toHaveLength(2);
      expect(command[0], name).toBe("node");
      expect(command[1], name).toMatch(/^[a-z-]+\/[a-z-]+\/dist\/main\.js$/);
      const dir = packageDirOf(command[1] ?? "");
      expect([...packages.values()], `${name}: ${dir} is no workspace package`).toContain(dir);
      expect(existsSync(path.join(ROOT, dir, "src", "main.ts")), `${name}: ${dir}/src/main.ts`).toBe(true);
    }
    expect(existsSync(path.join(ROOT, "Dockerfile"))).toBe(true);
  });

  it("sets only variables that the process's code reads, as strings", () => {
    for (const [name, service] of holdfastServices) {
      const read = envNamesRead(packageDirOf(entryOf(service)));
      expect(read.size, name).toBeGreaterThan(0);
      for (const [variable, value] of Object.entries(service.environment ?? {})) {
        expect(read.has(variable), `${name} sets ${variable}, which its code never reads`).toBe(true);
        // A bare yes, 8080 or on is not a string in YAML; compose would pass it on converted.
        expect(typeof value, `${name}: ${variable}`).toBe("string");
      }
    }
  });

  it("points every process at the postgres and nats services, with the database's own credentials", () => {
    const postgresEnv = services["postgres"]?.environment ?? {};
    for (const [name, service] of holdfastServices) {
      const env = service.environment ?? {};
      const database = new URL(String(env["DATABASE_URL"]));
      expect(database.hostname, name).toBe("postgres");
      expect(database.username, name).toBe(postgresEnv["POSTGRES_USER"]);
      expect(database.password, name).toBe(postgresEnv["POSTGRES_PASSWORD"]);
      expect(database.pathname, name).toBe(`/${String(postgresEnv["POSTGRES_DB"])}`);
      if (env["NATS_URL"] !== undefined) {
        expect(new URL(String(env["NATS_URL"])).hostname, name).toBe("nats");
        expect(Object.keys(service.depends_on ?? {}), name).toContain("nats");
      }
      expect(service.stop_grace_period, `${name}: time to drain before SIGKILL`).toBeDefined();
    }
  });
});
