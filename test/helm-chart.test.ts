// Goal: catch mistakes in the Helm chart (deploy/helm/holdfast) and the Dockerfile without a
// helm or docker binary, neither of which can be installed here: a values.yaml the schema
// rejects, a schema that lets bad values through, a template that reads a values key that does
// not exist (Helm renders a typo as empty and says nothing), an environment variable the
// processes would refuse, an inline secret, a Deployment without its probes or its non-root,
// read-only security context.
//
// Method: parse Chart.yaml and values.yaml with the yaml library in YAML 1.1 mode, as Helm's
// parser reads them (`on` and `yes` are booleans there); validate values against
// values.schema.json with ajv (draft-07), the way `helm install` does after merging a user's
// values file over the defaults; and read the templates as text: every `.Values.a.b` path must
// resolve in values.yaml, blocks must balance, every included helper must exist, and the env
// entries of each Deployment, evaluated against the default values, must pass the config loader
// of the process it runs. No cluster, database or network is involved; the file runs in well
// under a second.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { Ajv, type ErrorObject } from "ajv";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";

import { LOG_LEVELS } from "@holdfast/common/env";
import { loadBillingStreamConfig } from "@holdfast/billing-stream/config";
import { loadHoldExpiryConfig } from "@holdfast/hold-expiry/config";
import { loadLedgerConfig } from "@holdfast/ledger/config";
import { loadWebhookWorkerConfig } from "@holdfast/webhooks/config";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const CHART_DIR = path.join(ROOT, "deploy", "helm", "holdfast");
const TEMPLATES_DIR = path.join(CHART_DIR, "templates");

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

const readChartFile = (name: string): string => readFileSync(path.join(CHART_DIR, name), "utf8");
/** Helm reads YAML 1.1 (go-yaml through sigs.k8s.io/yaml), where `on`, `off` and `yes` are booleans. */
const parseHelmYaml = (text: string): Json => parse(text, { version: "1.1" }) as Json;
const isObject = (value: Json | undefined): value is JsonObject =>
  typeof value === "object" && value !== null && !Array.isArray(value);

const chart = parseHelmYaml(readChartFile("Chart.yaml")) as JsonObject;
const values = parseHelmYaml(readChartFile("values.yaml")) as JsonObject;
const schema = JSON.parse(readChartFile("values.schema.json")) as JsonObject;
const templates = new Map(
  readdirSync(TEMPLATES_DIR).map((name) => [name, readFileSync(path.join(TEMPLATES_DIR, name), "utf8")]),
);
const template = (name: string): string => {
  const text = templates.get(name);
  if (text === undefined) throw new Error(`templates/${name} is missing`);
  return text;
};

const EXPECTED_TEMPLATES = [
  "_helpers.tpl",
  "NOTES.txt",
  "ledger-deployment.yaml",
  "ledger-service.yaml",
  "ledger-hpa.yaml",
  "ledger-pdb.yaml",
  "hold-expiry-deployment.yaml",
  "webhooks-deployment.yaml",
  "billing-stream-deployment.yaml",
  "billing-stream-configmap.yaml",
  "serviceaccount.yaml",
  "servicemonitor.yaml",
  "podmonitor.yaml",
];

/**
 * Each Deployment template, its values key, the process it runs, and that process's config
 * module and loader: the variables a process reads are declared there and in the shared modules.
 */
const DEPLOYMENTS = [
  {
    file: "ledger-deployment.yaml",
    key: "ledger",
    entry: "services/ledger/dist/main.js",
    configModule: "services/ledger/src/config.ts",
    load: loadLedgerConfig,
  },
  {
    file: "hold-expiry-deployment.yaml",
    key: "holdExpiry",
    entry: "workers/hold-expiry/dist/main.js",
    configModule: "workers/hold-expiry/src/config.ts",
    load: loadHoldExpiryConfig,
  },
  {
    file: "webhooks-deployment.yaml",
    key: "webhooks",
    entry: "workers/webhooks/dist/main.js",
    configModule: "workers/webhooks/src/config.ts",
    load: loadWebhookWorkerConfig,
  },
  {
    file: "billing-stream-deployment.yaml",
    key: "billingStream",
    entry: "workers/billing-stream/dist/main.js",
    configModule: "packages/billing-core/src/config.ts",
    load: loadBillingStreamConfig,
  },
] as const;

/** The modules that declare variables more than one process reads. */
const SHARED_CONFIG_MODULES = ["packages/common/src/config.ts", "packages/common/src/metrics.ts", "packages/webhooks-core/src/settings.ts"];
const readSource = (file: string): string => readFileSync(path.join(ROOT, file), "utf8");

function compileSchema() {
  // strict catches keywords ajv does not know (a misspelt "minimun" would otherwise be ignored).
  const ajv = new Ajv({ allErrors: true, strict: true, allowUnionTypes: true });
  return ajv.compile(schema);
}
const validateValues = compileSchema();

function schemaErrors(candidate: Json): ErrorObject[] {
  return validateValues(candidate) ? [] : [...(validateValues.errors ?? [])];
}

/** Helm's merge of a user's values file over the chart's: maps merge key by key, the rest replaces. */
function coalesce(defaults: Json, overrides: Json): Json {
  if (!isObject(defaults) || !isObject(overrides)) return structuredClone(overrides);
  const merged: JsonObject = structuredClone(defaults);
  for (const [key, value] of Object.entries(overrides)) {
    const base = merged[key];
    merged[key] = base === undefined ? structuredClone(value) : coalesce(base, value);
  }
  return merged;
}

/** The value at a dotted path in values.yaml, or undefined when some segment does not exist. */
function resolveValuesPath(dotted: string): Json | undefined {
  let node: Json | undefined = values;
  for (const segment of dotted.split(".")) {
    if (!isObject(node) || !Object.hasOwn(node, segment)) return undefined;
    node = node[segment];
  }
  return node;
}

const VALUES_PATH = /\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)/g;

/** Every `.Values.x.y` path in a template text, without the leading `.Values.`. */
function valuesPaths(text: string): string[] {
  return [...text.matchAll(VALUES_PATH)].map((match) => (match[1] ?? "").slice(1));
}

/** Paths a text reads that values.yaml does not have. */
function unknownValuesPaths(text: string): string[] {
  return valuesPaths(text).filter((dotted) => resolveValuesPath(dotted) === undefined);
}

/** The template actions `{{ ... }}` of a text, trimmed of `-` markers; comments dropped. */
function actions(text: string): string[] {
  return [...text.matchAll(/\{\{-?\s*([\s\S]*?)\s*-?\}\}/g)]
    .map((match) => match[1] ?? "")
    .filter((action) => !action.startsWith("/*"));
}

/** The bodies of the helpers `{{ define "name" }} ... {{ end }}` in a text, by name. */
function defines(text: string): Map<string, string> {
  const found = new Map<string, string>();
  const pattern = /\{\{-?\s*(define\s+"([^"]+)"|if\b|with\b|range\b|block\b|end\b)[^}]*\}\}/g;
  let depth = 0;
  let current: { name: string; start: number } | null = null;
  for (const match of text.matchAll(pattern)) {
    const keyword = match[1] ?? "";
    if (keyword === "end") {
      depth -= 1;
      if (depth === 0 && current !== null) {
        found.set(current.name, text.slice(current.start, match.index));
        current = null;
      }
    } else {
      if (depth === 0 && keyword.startsWith("define")) {
        current = { name: match[2] ?? "", start: (match.index ?? 0) + match[0].length };
      }
      depth += 1;
    }
  }
  return found;
}

const helpers = defines(template("_helpers.tpl"));
const helper = (name: string): string => {
  const body = helpers.get(name);
  if (body === undefined) throw new Error(`_helpers.tpl defines no "${name}"`);
  return body;
};

/** The env entries `- name: X` / `value: {{ expr }}` of a text, in order. */
function envEntries(text: string): { name: string; expr: string }[] {
  return [...text.matchAll(/- name: ([A-Z][A-Z0-9_]*)\s*\n\s*value: \{\{-?\s*(.*?)\s*-?\}\}\s*$/gm)].map((match) => ({
    name: match[1] ?? "",
    expr: match[2] ?? "",
  }));
}

/**
 * The template variables a text defines in the one form env values use,
 * `$name := printf "%s/%s" (trimSuffix "/" .Values.a) .Values.b`, evaluated against the
 * default values.
 */
function templateVariables(text: string): Map<string, string> {
  const pattern = /\$(\w+) := printf "%s\/%s" \(trimSuffix "\/" \.Values\.([\w.]+)\) \.Values\.([\w.]+)/g;
  return new Map(
    [...text.matchAll(pattern)].map((match) => {
      const dir = String(resolveValuesPath(match[2] ?? ""));
      const name = String(resolveValuesPath(match[3] ?? ""));
      return [`$${match[1]}`, `${dir.endsWith("/") ? dir.slice(0, -1) : dir}/${name}`];
    }),
  );
}

/**
 * Evaluates the few pipelines env values use, against the default values: a `.Values` path,
 * `ternary "a" "b" .Values.path` or a variable of `variables`, then `int64` and `quote`.
 * Anything else returns undefined.
 */
function evaluateEnvExpr(expr: string, variables: ReadonlyMap<string, string> = new Map()): string | undefined {
  const [head = "", ...stages] = expr.split("|").map((part) => part.trim());
  let value: Json | undefined;
  const ternary = /^ternary "([^"]*)" "([^"]*)" \.Values\.([\w.]+)$/.exec(head);
  if (variables.has(head)) {
    value = variables.get(head);
  } else if (ternary !== null) {
    value = resolveValuesPath(ternary[3] ?? "") === true ? (ternary[1] ?? "") : (ternary[2] ?? "");
  } else if (head.startsWith(".Values.") || head.startsWith(".root.Values.")) {
    value = resolveValuesPath(head.slice(head.indexOf(".Values.") + ".Values.".length));
  } else {
    return undefined;
  }
  for (const stage of stages) {
    if (stage === "int64" && typeof value === "number") value = Math.trunc(value);
    else if (stage === "quote") value = String(value);
    else throw new Error(`unsupported pipeline stage "${stage}" in {{ ${expr} }}`);
  }
  return typeof value === "string" ? value : undefined;
}

/** The environment a Deployment's container gets from the default values (secret refs left out). */
function renderedEnv(file: string): Record<string, string> {
  const env: Record<string, string> = {};
  const variables = templateVariables(template(file));
  // A worker's HOLDFAST_METRICS_PORT comes from a helper it includes (with metrics enabled).
  const metricsEnv = template(file).includes('include "holdfast.workerMetrics" (dict "root" . "part" "env")') ? envEntries(helper("holdfast.workerMetrics")) : [];
  for (const { name, expr } of [...envEntries(helper("holdfast.commonEnv")), ...envEntries(template(file)), ...metricsEnv]) {
    const value = evaluateEnvExpr(expr, variables);
    if (value !== undefined) env[name] = value;
  }
  return env;
}

const objectAt = (dotted: string): JsonObject => {
  const node = resolveValuesPath(dotted);
  if (!isObject(node)) throw new Error(`values.yaml has no object at ${dotted}`);
  return node;
};
const numberAt = (dotted: string): number => {
  const node = resolveValuesPath(dotted);
  if (typeof node !== "number") throw new Error(`values.yaml has no number at ${dotted}`);
  return node;
};

describe("Chart.yaml and values", () => {
  it("names the chart holdfast 0.1.0 (apiVersion v2) with the package's version as appVersion", () => {
    const pkg = JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8")) as { version: string };
    expect(chart).toMatchObject({ apiVersion: "v2", name: "holdfast", version: "0.1.0", appVersion: "0.1.0" });
    expect(chart["appVersion"]).toBe(pkg.version);
  });

  it("values.yaml passes values.schema.json, a draft-07 schema", () => {
    expect(schema["$schema"]).toBe("http://json-schema.org/draft-07/schema#");
    expect(schemaErrors(values)).toEqual([]);
  });

  it("the schema's log levels are exactly the ones the processes accept", () => {
    const logLevel = (schema["properties"] as JsonObject)["config"] as JsonObject;
    expect((logLevel["properties"] as JsonObject)["logLevel"]).toMatchObject({ enum: [...LOG_LEVELS] });
  });

  // Each case is a user's values file, merged over values.yaml as Helm does, and where the
  // schema must object.
  const badFiles: [string, string, string, string][] = [
    ["replicas as a word", "ledger:\n  replicaCount: two\n", "/ledger/replicaCount", "type"],
    ["an unknown log level", "config:\n  logLevel: verbose\n", "/config/logLevel", "enum"],
    ["no ledger replicas", "ledger:\n  replicaCount: 0\n", "/ledger/replicaCount", "minimum"],
    ["a port of 0", "ledger:\n  port: 0\n", "/ledger/port", "minimum"],
    ["a port above 65535", "ledger:\n  service:\n    port: 70000\n", "/ledger/service/port", "maximum"],
    ["a misspelt key", "ledger:\n  replicaCout: 3\n", "/ledger", "additionalProperties"],
    ["a worker flag as a string", 'webhooks:\n  enabled: "true"\n', "/webhooks/enabled", "type"],
    ["a negative preStop sleep", "ledger:\n  preStopSleepSeconds: -1\n", "/ledger/preStopSleepSeconds", "minimum"],
    ["a number as an env value", "config:\n  extraEnv:\n    - name: HOLDFAST_AUTH_CACHE_MS\n      value: 2000\n", "/config/extraEnv/0/value", "type"],
    ["NATS credentials inline", "nats:\n  url: nats://app:hunter2@nats:4222\n", "/nats/url", "pattern"],
    ["a pool of 0 connections", "holdExpiry:\n  pgPoolMax: 0\n", "/holdExpiry/pgPoolMax", "minimum"],
    ["a relative billing config path", "billingStream:\n  configMountPath: etc/billing\n", "/billingStream/configMountPath", "pattern"],
  ];
  it.each(badFiles)("the schema rejects a values file with %s", (_label, file, instancePath, keyword) => {
    const errors = schemaErrors(coalesce(values, parseHelmYaml(file)));
    expect(errors.map((error) => [error.instancePath, error.keyword])).toContainEqual([instancePath, keyword]);
  });

  it("the schema accepts the billing-stream worker configured with the example sink file", () => {
    const example = JSON.parse(
      readFileSync(path.join(ROOT, "workers", "billing-stream", "billing-stream.example.json"), "utf8"),
    ) as Json;
    const file = { billingStream: { enabled: true, existingSecret: "holdfast-billing", healthPort: 9464, config: example } };
    expect(schemaErrors(coalesce(values, file))).toEqual([]);
  });

  it("values.yaml holds no secret: no URL with credentials, no key-like string", () => {
    const strings: string[] = [];
    const collect = (node: Json): void => {
      if (typeof node === "string") strings.push(node);
      else if (Array.isArray(node)) node.forEach(collect);
      else if (isObject(node)) Object.values(node).forEach(collect);
    };
    collect(values);
    for (const text of strings) {
      expect(text).not.toMatch(/[a-z][a-z0-9+.-]*:\/\/[^\s/:@]+:[^\s/@]+@/i);
      expect(text).not.toMatch(/\b(sk|rk)_(live|test)_\w+/);
    }
    expect(resolveValuesPath("database.existingSecret")).toBe("");
    expect(Object.keys(objectAt("database")).sort()).toEqual(["existingSecret", "ownerExistingSecret", "ownerUrlKey", "tls", "urlKey"]);
    expect(resolveValuesPath("database.ownerExistingSecret")).toBe("");
  });
});

describe("templates", () => {
  it("every expected template exists, and nothing else is in templates/", () => {
    expect([...templates.keys()].sort()).toEqual([...EXPECTED_TEMPLATES].sort());
  });

  it("reference only values keys that exist in values.yaml", () => {
    const all = [...templates.values()].flatMap(valuesPaths);
    // The scan must see the templates' references at all, and must report a typo.
    expect(all.length).toBeGreaterThan(80);
    expect(unknownValuesPaths("{{ .Values.ledger.replicaCout }} {{ $.Values.ledger.port }}")).toEqual(["ledger.replicaCout"]);
    for (const [name, text] of templates) {
      expect(unknownValuesPaths(text), `templates/${name}`).toEqual([]);
    }
  });

  it("balance their blocks and include only helpers that _helpers.tpl defines", () => {
    for (const [name, text] of templates) {
      let depth = 0;
      for (const action of actions(text)) {
        if (/^(if|with|range|define|block)\b/.test(action)) depth += 1;
        if (/^end\b/.test(action)) depth -= 1;
        expect(depth, `templates/${name}: an {{ end }} without a block`).toBeGreaterThanOrEqual(0);
      }
      expect(depth, `templates/${name}: a block without its {{ end }}`).toBe(0);
      for (const match of text.matchAll(/\binclude "([^"]+)"/g)) {
        expect(helpers.has(match[1] ?? ""), `templates/${name} includes "${match[1]}"`).toBe(true);
      }
    }
  });

  it("render env values as strings: quoted, and numbers through int64 (Helm prints a float 1e+06)", () => {
    const entries = [...templates.values()].flatMap(envEntries);
    expect(entries.length).toBeGreaterThan(15);
    for (const { name, expr } of entries) {
      expect(expr, name).toMatch(/\|\s*quote$/);
      for (const dotted of valuesPaths(expr)) {
        if (typeof resolveValuesPath(dotted) === "number") expect(expr, name).toMatch(/\|\s*int64\s*\|/);
      }
    }
  });

  it("set only environment variables that the processes read", () => {
    const envNames = (text: string): string[] =>
      [...text.matchAll(/- name: ([A-Z][A-Z0-9_]*)\s*\n\s*value(?:From)?:/g)].map((match) => match[1] ?? "");
    const declared = (modules: readonly string[]): string => modules.map(readSource).join("\n");
    const shared = [...SHARED_CONFIG_MODULES];
    // Every name in any template is read by some process...
    const everyModule = declared([...shared, ...DEPLOYMENTS.map((d) => d.configModule)]);
    const names = [...templates.values()].flatMap(envNames);
    expect(names).toContain("DATABASE_URL");
    for (const name of new Set(names)) expect(everyModule, name).toContain(`"${name}"`);
    // ...and what a Deployment sets on its own is read by the process that Deployment runs.
    for (const { file, configModule } of DEPLOYMENTS) {
      const own = declared([...shared, configModule]);
      const names = envNames(template(file));
      expect(names.length, file).toBeGreaterThan(0);
      for (const name of names) expect(own, `${file}: ${name}`).toContain(`"${name}"`);
    }
  });

  it("give each Deployment an environment that its process's config loader accepts", () => {
    const configs = new Map<string, object>();
    for (const { file, load } of DEPLOYMENTS) {
      const env = renderedEnv(file);
      expect(() => configs.set(file, load(env)), file).not.toThrow();
    }
    expect(configs.get("ledger-deployment.yaml")).toMatchObject({
      port: numberAt("ledger.port"),
      drainTimeoutMs: numberAt("ledger.drainTimeoutMs"),
      pgPoolMax: numberAt("ledger.pgPoolMax"),
      groupCommit: resolveValuesPath("ledger.groupCommit"),
      logLevel: resolveValuesPath("config.logLevel"),
      natsUrl: resolveValuesPath("nats.url"),
    });
    expect(configs.get("hold-expiry-deployment.yaml")).toMatchObject({ pgPoolMax: numberAt("holdExpiry.pgPoolMax") });
    expect(configs.get("webhooks-deployment.yaml")).toMatchObject({
      pgPoolMax: numberAt("webhooks.pgPoolMax"),
      webhooks: { concurrency: numberAt("webhooks.concurrency"), timeoutMs: numberAt("webhooks.timeoutMs") },
    });
    const billingPath = `${String(resolveValuesPath("billingStream.configMountPath"))}/${String(resolveValuesPath("billingStream.configFileName"))}`;
    expect(configs.get("billing-stream-deployment.yaml")).toMatchObject({
      pgPoolMax: numberAt("billingStream.pgPoolMax"),
      billingConfigPath: billingPath,
    });
  });

  it("hold no inline secret: no Secret objects, secrets only by secretKeyRef, no credentials", () => {
    for (const [name, text] of templates) {
      expect(text, name).not.toMatch(/kind:\s*Secret\b/);
      expect(text, name).not.toMatch(/\bb64enc\b/);
      expect(text, name).not.toMatch(/[a-z][a-z0-9+.-]*:\/\/[^\s/:@"']+:[^\s/@"']+@/i);
      expect(text, name).not.toMatch(/\b(sk|rk)_(live|test)_\w+|-----BEGIN [A-Z ]*PRIVATE KEY-----/);
      for (const match of text.matchAll(/- name: ([A-Z][A-Z0-9_]*)\s*\n\s*(value|valueFrom):/g)) {
        if (/PASSWORD|SECRET|TOKEN|API_KEY|CREDENTIAL|DATABASE_URL/.test(match[1] ?? "")) {
          expect(match[2], `${name}: ${match[1]} must come from a Secret`).toBe("valueFrom");
        }
      }
    }
    expect(helper("holdfast.commonEnv")).toMatch(
      /- name: DATABASE_URL\s+valueFrom:\s+secretKeyRef:\s+name: \{\{ required "[^"]+" \.Values\.database\.existingSecret/,
    );
  });
});

describe("Deployments", () => {
  it("the ledger probes /healthz (startup, liveness) and /readyz (readiness) on the grpc port", () => {
    const ledger = template("ledger-deployment.yaml");
    const probe = (kind: string, probePath: string) =>
      new RegExp(`${kind}:\\s+(?:\\{\\{- if \\$tcpProbes \\}\\}\\s+tcpSocket:\\s+port: grpc\\s+\\{\\{- else \\}\\}\\s+)?httpGet:\\s+path: ${probePath}\\s+port: grpc\\b`);
    expect(ledger).toMatch(probe("startupProbe", "/healthz"));
    expect(ledger).toMatch(probe("livenessProbe", "/healthz"));
    expect(ledger).toMatch(probe("readinessProbe", "/readyz"));
    expect(ledger).toMatch(/- name: grpc\s+containerPort: \{\{ \.Values\.ledger\.port \}\}/);
  });

  it("the ledger's grace period covers the preStop sleep and the drain, and the chart enforces it", () => {
    const drainSeconds = Math.ceil(numberAt("ledger.drainTimeoutMs") / 1000);
    expect(numberAt("ledger.terminationGracePeriodSeconds")).toBeGreaterThan(drainSeconds + numberAt("ledger.preStopSleepSeconds"));
    expect(template("ledger-deployment.yaml")).toContain('include "holdfast.validateLedger"');
    expect(helper("holdfast.validateLedger")).toMatch(/fail \(printf "ledger\.terminationGracePeriodSeconds/);
    expect(template("ledger-deployment.yaml")).toMatch(/preStop:\s+exec:\s+command: \["sleep"/);
  });

  it("every Deployment runs as non-root with a read-only root filesystem and no privileges", () => {
    const container = helper("holdfast.containerSecurityContext");
    expect(parseHelmYaml(container)).toEqual({
      runAsNonRoot: true,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ["ALL"] },
    });
    // The pod's runAsNonRoot is fixed in the helper; podSecurityContext is merged under it.
    expect(helper("holdfast.podSpecCommon")).toMatch(/merge \$fixed/);
    expect(helper("holdfast.podSpecCommon")).toMatch(/dict "runAsNonRoot" true/);
    expect(numberAt("podSecurityContext.runAsUser")).toBeGreaterThan(0);
    for (const { file } of DEPLOYMENTS) {
      const text = template(file);
      expect(text, file).toMatch(/securityContext:\s+\{\{- include "holdfast\.containerSecurityContext" \. \| nindent 12 \}\}/);
      expect(text, file).toContain('include "holdfast.podSpecCommon" . | nindent 6');
      expect(text, file).toContain('include "holdfast.tmpVolumeMount"');
    }
  });

  it("each worker has its enabled flag, its replicas and its entry point", () => {
    for (const { file, key, entry } of DEPLOYMENTS) {
      const text = template(file);
      expect(text, file).toContain(`command: ["node", "${entry}"]`);
      // The entry point is compiled from a source folder of this repository.
      const sourceDir = path.dirname(entry).replace(/\/dist$/, "/src");
      expect(existsSync(path.join(ROOT, sourceDir)), sourceDir).toBe(true);
      if (key === "ledger") continue;
      expect(text, file).toMatch(new RegExp(`^\\{\\{- if \\.Values\\.${key}\\.enabled \\}\\}$`, "m"));
      expect(text, file).toContain(`replicas: {{ .Values.${key}.replicaCount }}`);
      expect(typeof resolveValuesPath(`${key}.enabled`), key).toBe("boolean");
    }
  });

  it("the billing-stream worker mounts its ConfigMap and points HOLDFAST_BILLING_CONFIG at the file", () => {
    const text = template("billing-stream-deployment.yaml");
    expect(text).toMatch(/- name: HOLDFAST_BILLING_CONFIG\s+value: \{\{ \$configPath \| quote \}\}/);
    expect(text).toMatch(/\$configPath := printf "%s\/%s" \(trimSuffix "\/" \.Values\.billingStream\.configMountPath\) \.Values\.billingStream\.configFileName/);
    expect(text).toMatch(/- name: billing-config\s+mountPath: \{\{ \.Values\.billingStream\.configMountPath \| quote \}\}\s+readOnly: true/);
    expect(text).toMatch(/- name: billing-config\s+configMap:\s+name: \{\{ \$configMap \| quote \}\}/);
    expect(text).toMatch(/envFrom:\s+- secretRef:\s+name: \{\{ \. \| quote \}\}/);
    const configMap = template("billing-stream-configmap.yaml");
    expect(configMap).toMatch(/\{\{ \.Values\.billingStream\.configFileName \}\}: \|\s+\{\{- toPrettyJson \.Values\.billingStream\.config/);
  });
});

describe("Service, autoscaler and disruption budget", () => {
  it("the Service has one port, named grpc, with appProtocol kubernetes.io/h2c", () => {
    const service = template("ledger-service.yaml");
    expect([...service.matchAll(/^\s+- name: /gm)]).toHaveLength(1);
    expect(service).toMatch(/- name: grpc\s+port: \{\{ \.Values\.ledger\.service\.port \}\}\s+targetPort: grpc/);
    expect(service).toContain("appProtocol: {{ . }}");
    expect(resolveValuesPath("ledger.service.appProtocol")).toBe("kubernetes.io/h2c");
  });

  it("the HPA is autoscaling/v2 on CPU behind its flag, and then owns the ledger's replicas", () => {
    const hpa = template("ledger-hpa.yaml");
    expect(hpa).toMatch(/^\{\{- if \.Values\.ledger\.autoscaling\.enabled \}\}$/m);
    expect(hpa).toContain("apiVersion: autoscaling/v2");
    expect(hpa).toMatch(/name: cpu\s+target:\s+type: Utilization\s+averageUtilization: \{\{ \.Values\.ledger\.autoscaling\.targetCPUUtilizationPercentage \}\}/);
    expect(template("ledger-deployment.yaml")).toMatch(
      /\{\{- if not \.Values\.ledger\.autoscaling\.enabled \}\}\s+replicas: \{\{ \.Values\.ledger\.replicaCount \}\}\s+\{\{- end \}\}/,
    );
    expect(typeof resolveValuesPath("ledger.resources.requests.cpu")).toBe("string");
  });

  it("the PodDisruptionBudget is policy/v1 behind its flag and selects the ledger pods", () => {
    const pdb = template("ledger-pdb.yaml");
    expect(pdb).toMatch(/^\{\{- if \.Values\.ledger\.podDisruptionBudget\.enabled \}\}$/m);
    expect(pdb).toContain("apiVersion: policy/v1");
    expect(pdb).toMatch(/selector:\s+matchLabels:\s+\{\{- include "holdfast\.selectorLabels" \$component/);
  });

  it("with the owner's Secret, an init container migrates as the owner and the processes keep the runtime URL", () => {
    const ledger = template("ledger-deployment.yaml");
    const init = /\{\{- if \.Values\.database\.ownerExistingSecret \}\}([\s\S]*?)\{\{- end \}\}\n\s+containers:/.exec(ledger)?.[1] ?? "";
    expect(init).toMatch(/initContainers:\s+- name: migrate/);
    expect(init).toContain('command: ["node", "tools/cli/bin/holdfast.js", "migrate"]');
    expect(init).toMatch(/- name: DATABASE_URL\s+valueFrom:\s+secretKeyRef:\s+name: \{\{ \.Values\.database\.ownerExistingSecret \| quote \}\}/);
    expect(init).toMatch(/securityContext:\s+\{\{- include "holdfast\.containerSecurityContext" \. \| nindent 12 \}\}/);
    // The owner's URL reaches the init container only; every process reads the runtime role's.
    expect([...templates.values()].join("\n").match(/ownerExistingSecret/g)).toHaveLength(2);
    expect(existsSync(path.join(ROOT, "tools", "cli", "bin", "holdfast.js"))).toBe(true);
    const bad = coalesce(values, parseHelmYaml("database:\n  ownerExistingSecret: Not_A_Name\n"));
    expect(schemaErrors(bad).map((e) => e.instancePath)).toContain("/database/ownerExistingSecret");
  });
});

describe("TLS (docs/security.md, \"TLS and mTLS\")", () => {
  // The values a deployment with TLS everywhere sets: the ledger's port with client
  // verification, a client certificate for NATS, and PostgreSQL's CA for DATABASE_URL.
  const tlsOn = parseHelmYaml(
    "database:\n  tls:\n    existingSecret: holdfast-pg-tls\n" +
      "nats:\n  url: tls://nats:4222\n  tls:\n    existingSecret: holdfast-nats-tls\n    clientCertificate: true\n" +
      "ledger:\n  tls:\n    existingSecret: holdfast-ledger-tls\n    verifyClients: true\n",
  );
  const merged = coalesce(values, tlsOn) as JsonObject;
  const at = (dotted: string): Json | undefined =>
    dotted.split(".").reduce<Json | undefined>((node, key) => (isObject(node) ? node[key] : undefined), merged);

  /**
   * The env entries `- name: X` / `value: {{ printf "%s/<file>" $dir | quote }}` of a text, with
   * $dir (`$x := trimSuffix "/" <values path>`) evaluated against the TLS-on values.
   */
  function tlsFileEnv(text: string): Record<string, string> {
    const dirs = new Map(
      [...text.matchAll(/\$(\w+) := trimSuffix "\/" \$?(?:root)?\.Values\.([\w.]+)/g)].map((m) => [`$${m[1]}`, String(at(m[2] ?? "")).replace(/\/$/, "")]),
    );
    const env: Record<string, string> = {};
    for (const m of text.matchAll(/- name: ([A-Z][A-Z0-9_]*)\s*\n\s*value: \{\{ printf "%s\/([\w.]+)" (\$\w+) \| quote \}\}/g)) {
      const dir = dirs.get(m[3] ?? "");
      if (dir === undefined) throw new Error(`${m[1]}: ${m[3]} is not defined in the same text`);
      env[m[1] ?? ""] = `${dir}/${m[2]}`;
    }
    return env;
  }

  it("the schema takes the TLS values, off by default, and refuses a bad Secret name or a relative mount path", () => {
    expect(schemaErrors(merged)).toEqual([]);
    for (const dotted of ["ledger.tls.existingSecret", "nats.tls.existingSecret", "database.tls.existingSecret"]) {
      expect(resolveValuesPath(dotted), dotted).toBe("");
    }
    expect(resolveValuesPath("ledger.tls.verifyClients")).toBe(false);
    expect(resolveValuesPath("nats.tls.clientCertificate")).toBe(false);
    const bad = coalesce(merged, parseHelmYaml("ledger:\n  tls:\n    existingSecret: Not_A_Name\nnats:\n  tls:\n    mountPath: certs\n"));
    expect(schemaErrors(bad).map((e) => e.instancePath)).toEqual(expect.arrayContaining(["/ledger/tls/existingSecret", "/nats/tls/mountPath"]));
  });

  it("with TLS on, each process gets file paths its config loader accepts, in the mounted Secrets", () => {
    const ledgerText = template("ledger-deployment.yaml");
    const helperText = helper("holdfast.tlsFiles");
    const ledgerEnv = { ...renderedEnv("ledger-deployment.yaml"), ...tlsFileEnv(ledgerText), ...tlsFileEnv(helperText) };
    expect(loadLedgerConfig(ledgerEnv)).toMatchObject({
      tls: { certFile: "/etc/holdfast/tls/tls.crt", keyFile: "/etc/holdfast/tls/tls.key", clientCaFile: "/etc/holdfast/tls/ca.crt" },
      natsTls: { caFile: "/etc/holdfast/nats-tls/ca.crt", certFile: "/etc/holdfast/nats-tls/tls.crt", keyFile: "/etc/holdfast/nats-tls/tls.key" },
    });
    for (const { file, load } of DEPLOYMENTS.filter((d) => d.key === "webhooks" || d.key === "billingStream")) {
      expect(template(file), file).toContain('include "holdfast.tlsFiles" (dict "root" . "part" "env" "nats" true) | nindent 12');
      expect(load({ ...renderedEnv(file), ...tlsFileEnv(helperText) }), file).toMatchObject({ natsTls: { caFile: "/etc/holdfast/nats-tls/ca.crt" } });
    }
    // Port TLS only when its Secret is set; the client CA only with verifyClients.
    expect(ledgerText).toMatch(/\{\{- if \.Values\.ledger\.tls\.existingSecret \}\}\s+- name: HOLDFAST_TLS_CERT_FILE[\s\S]*?\{\{- if \.Values\.ledger\.tls\.verifyClients \}\}\s+- name: HOLDFAST_TLS_CLIENT_CA_FILE/);
    expect(helperText).toMatch(/\$nats := and \.nats \$root\.Values\.nats\.tls\.existingSecret/);
    expect(helperText).toMatch(/\{\{- if \$root\.Values\.nats\.tls\.clientCertificate \}\}\s+- name: HOLDFAST_NATS_TLS_CERT_FILE/);
  });

  it("mounts every TLS Secret read-only, in each pod that reads it, and the migrate init container gets PostgreSQL's", () => {
    const ledgerText = template("ledger-deployment.yaml");
    expect(ledgerText).toMatch(/- name: tls\s+mountPath: \{\{ \.Values\.ledger\.tls\.mountPath \| quote \}\}\s+readOnly: true/);
    expect(ledgerText).toMatch(/\{\{- with \.Values\.ledger\.tls\.existingSecret \}\}[\s\S]*?- name: tls\s+secret:\s+secretName: \{\{ \. \| quote \}\}/);
    const helperText = helper("holdfast.tlsFiles");
    for (const name of ["database-tls", "nats-tls"]) {
      expect(helperText, name).toMatch(new RegExp(`- name: ${name}\\s+mountPath: [^\\n]+\\s+readOnly: true`));
      expect(helperText, name).toMatch(new RegExp(`- name: ${name}\\s+secret:\\s+secretName: `));
    }
    for (const { file, key } of DEPLOYMENTS) {
      const nats = key === "holdExpiry" ? "false" : "true";
      for (const part of ["mount", "volume"]) {
        expect(template(file), `${file} ${part}`).toContain(`include "holdfast.tlsFiles" (dict "root" . "part" "${part}" "nats" ${nats})`);
      }
    }
    const init = /initContainers:([\s\S]*?)\n\s+containers:/.exec(ledgerText)?.[1] ?? "";
    expect(init).toContain('include "holdfast.tlsFiles" (dict "root" . "part" "mount" "nats" false)');
  });

  it("the ledger's probes use HTTPS when its port serves TLS, and TCP when it also verifies clients", () => {
    const ledgerText = template("ledger-deployment.yaml");
    expect(ledgerText).toContain('$probeScheme := ternary "HTTPS" "HTTP" (not (empty .Values.ledger.tls.existingSecret))');
    for (const kind of ["startupProbe", "livenessProbe", "readinessProbe"]) {
      expect(ledgerText, kind).toMatch(new RegExp(`${kind}:\\s+\\{\\{- if \\$tcpProbes \\}\\}\\s+tcpSocket:\\s+port: grpc\\s+\\{\\{- else \\}\\}\\s+httpGet:\\s+path: /\\w+\\s+port: grpc\\s+scheme: \\{\\{ \\$probeScheme \\}\\}\\s+\\{\\{- end \\}\\}`));
    }
    // With client verification kubelet cannot finish an HTTPS request, so the probes only connect.
    expect(ledgerText).toContain("$tcpProbes := and .Values.ledger.tls.existingSecret .Values.ledger.tls.verifyClients");
  });

  it("values.yaml says that DATABASE_URL carries sslmode", () => {
    expect(readChartFile("values.yaml")).toMatch(/sslmode=verify-full&sslrootcert=/);
  });
});

describe("namespace and metrics", () => {
  it("every process gets HOLDFAST_NAMESPACE, and the stream's name only when one is set", () => {
    expect(resolveValuesPath("config.namespace")).toBe("holdfast");
    expect(resolveValuesPath("config.streamName")).toBe("");
    for (const { file, key, load } of DEPLOYMENTS) {
      const env = renderedEnv(file);
      expect(env["HOLDFAST_NAMESPACE"], file).toBe("holdfast");
      expect(env["HOLDFAST_STREAM_NAME"], file).toBeUndefined();
      // The hold-expiry worker does not use NATS; the others read the namespace.
      if (key !== "holdExpiry") expect(load(env), file).toMatchObject({ namespace: "holdfast", streamName: "HOLDFAST_EVENTS" });
    }
    expect(helper("holdfast.commonEnv")).toMatch(/\{\{- with \.Values\.config\.streamName \}\}\s+- name: HOLDFAST_STREAM_NAME\s+value: \{\{ \. \| quote \}\}/);
    for (const bad of ["Staging", "a.b", "", "x".repeat(33)]) {
      const errors = schemaErrors(coalesce(values, { config: { namespace: bad } }));
      expect(errors.map((e) => [e.instancePath, e.keyword]), bad).toContainEqual(["/config/namespace", "pattern"]);
    }
    expect(schemaErrors(coalesce(values, { config: { namespace: "staging", streamName: "STAGING_EVENTS" } }))).toEqual([]);
  });

  it("the workers serve HOLDFAST_METRICS_PORT on a port named metrics, scraped by annotation", () => {
    const workerEnv = envEntries(helper("holdfast.workerMetrics"));
    expect(workerEnv).toEqual([{ name: "HOLDFAST_METRICS_PORT", expr: ".root.Values.metrics.port | int64 | quote" }]);
    expect(helper("holdfast.workerMetrics")).toMatch(/ports:\s+- name: metrics\s+containerPort: \{\{ \.root\.Values\.metrics\.port \}\}/);
    for (const file of ["hold-expiry-deployment.yaml", "webhooks-deployment.yaml", "billing-stream-deployment.yaml"]) {
      const text = template(file);
      expect(text, file).toContain('include "holdfast.workerMetrics" (dict "root" . "part" "env") | nindent 12');
      expect(text, file).toContain('include "holdfast.scrapeAnnotations"');
      expect(renderedEnv(file)["HOLDFAST_METRICS_PORT"], file).toBe(String(numberAt("metrics.port")));
    }
    expect(helper("holdfast.scrapeAnnotations")).toMatch(/"prometheus\.io\/scrape" "true"[\s\S]*"prometheus\.io\/port"[\s\S]*"prometheus\.io\/path" "\/metrics"/);
    // The billing-stream worker's probes follow its metrics port.
    expect(template("billing-stream-deployment.yaml")).toMatch(/\$metricsPort := ternary \(int64 \.Values\.metrics\.port\) \(int64 \.Values\.billingStream\.healthPort\) \.Values\.metrics\.enabled/);
    expect(template("billing-stream-deployment.yaml")).toMatch(/containerPort: \{\{ \$metricsPort \}\}/);
  });

  it("the ledger's token comes from a Secret, and then the ledger is not scraped by annotation", () => {
    const ledger = template("ledger-deployment.yaml");
    expect(ledger).toMatch(
      /\{\{- with \.Values\.metrics\.tokenExistingSecret \}\}\s+- name: HOLDFAST_METRICS_TOKEN\s+valueFrom:\s+secretKeyRef:\s+name: \{\{ \. \| quote \}\}\s+key: \{\{ \$\.Values\.metrics\.tokenKey \| quote \}\}/,
    );
    expect(ledger).toMatch(/\{\{- if not \.Values\.metrics\.tokenExistingSecret \}\}\s+\{\{- include "holdfast\.scrapeAnnotations" \(dict "root" \. "port" \.Values\.ledger\.port/);
    expect(resolveValuesPath("metrics.tokenExistingSecret")).toBe("");
    const bad = coalesce(values, parseHelmYaml("metrics:\n  tokenExistingSecret: Not_A_Name\n"));
    expect(schemaErrors(bad).map((e) => e.instancePath)).toContain("/metrics/tokenExistingSecret");
  });

  it("a ServiceMonitor (ledger) and a PodMonitor (workers) behind one toggle, off by default", () => {
    expect(resolveValuesPath("metrics.serviceMonitor.enabled")).toBe(false);
    const monitor = template("servicemonitor.yaml");
    expect(monitor).toMatch(/^\{\{- if \.Values\.metrics\.serviceMonitor\.enabled \}\}$/m);
    expect(monitor).toMatch(/apiVersion: monitoring\.coreos\.com\/v1\s+kind: ServiceMonitor/);
    expect(monitor).toMatch(/- port: grpc\s+path: \/metrics/);
    expect(monitor).toMatch(/authorization:\s+type: Bearer\s+credentials:\s+name: \{\{ \. \| quote \}\}/);
    const pods = template("podmonitor.yaml");
    expect(pods).toMatch(/^\{\{- if \.Values\.metrics\.serviceMonitor\.enabled \}\}$/m);
    expect(pods).toMatch(/kind: PodMonitor[\s\S]*values: \[hold-expiry, webhooks, billing-stream\][\s\S]*- port: metrics\s+path: \/metrics/);
    const badInterval = coalesce(values, parseHelmYaml("metrics:\n  serviceMonitor:\n    interval: soon\n"));
    expect(schemaErrors(badInterval).map((e) => [e.instancePath, e.keyword])).toContainEqual(["/metrics/serviceMonitor/interval", "pattern"]);
  });
});

describe("Dockerfile", () => {
  const dockerfile = readFileSync(path.join(ROOT, "Dockerfile"), "utf8");
  const dockerignore = readFileSync(path.join(ROOT, ".dockerignore"), "utf8").split("\n");

  it("builds in one stage and runs the compiled ledger from a second as a numeric non-root user", () => {
    expect(dockerfile.match(/^FROM /gm)).toHaveLength(2);
    expect(dockerfile).toMatch(/^RUN npm ci\b/m);
    expect(dockerfile).toMatch(/^RUN npm run build$/m);
    expect(dockerfile).toMatch(/^RUN npm prune --omit=dev\b/m);
    // The runtime copies the pruned build tree whole; the clean-up step must keep the SQL
    // migrations (tsc does not copy .sql files, and the ledger applies them at start).
    expect(dockerfile).toContain("COPY --from=build /app ./");
    const cleanup = dockerfile.slice(dockerfile.indexOf("RUN rm -rf"), dockerfile.indexOf("FROM ${NODE_IMAGE} AS runtime"));
    expect(cleanup).not.toMatch(/\bdb\b|migrations|\.sql/);
    const user = /^USER (\d+):(\d+)$/m.exec(dockerfile);
    expect(Number(user?.[1])).toBe(numberAt("podSecurityContext.runAsUser"));
    expect(dockerfile).toContain(`CMD ["node", "${DEPLOYMENTS[0].entry}"]`);
    expect(dockerignore).toEqual(expect.arrayContaining(["node_modules", "dist", ".git"]));
  });
});
