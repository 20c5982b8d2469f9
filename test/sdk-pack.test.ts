// Goal: @holdfast/client is publishable as docs/sdk.md says: `npm pack` makes a tarball that
// carries the generated code it needs (no dependency on the private @holdfast/gen), installs in
// an empty directory, runs the README's SDK quickstart there against a real ledger, type-checks
// for a TypeScript consumer (NodeNext), and bundles for browsers without Node's built-ins.
// Method: build the package with tsc -b, pack it into a temporary directory, `npm install` the
// tarball into another (its connect-es and protobuf dependencies come from npm's cache when it
// has them, from the registry otherwise), then run the README's first ```js block of "The same
// with the SDK" with node there, its baseUrl pointed at a test server and HOLDFAST_API_KEY set;
// compile a consumer with the repository's TypeScript; bundle one with esbuild for the browser.
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { build } from "esbuild";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestServer } from "./support/server.js";

const run = promisify(execFile);
const root = path.resolve(import.meta.dirname, "..");
let s: Awaited<ReturnType<typeof startTestServer>>;
let work: string;
let consumer: string;
let files: string[];

beforeAll(async () => {
  s = await startTestServer();
  work = await mkdtemp(path.join(tmpdir(), "holdfast-sdk-pack-"));
  await run(process.execPath, [path.join(root, "node_modules/typescript/bin/tsc"), "-b", "packages/client"], { cwd: root });
  const { stdout } = await run("npm", ["pack", "--json", "--pack-destination", work], { cwd: path.join(root, "packages/client") });
  const [packed] = JSON.parse(stdout) as { filename: string; files: { path: string }[] }[];
  files = packed!.files.map((f) => f.path);
  consumer = path.join(work, "consumer");
  await run("mkdir", ["-p", consumer]);
  await writeFile(path.join(consumer, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module" }));
  await run("npm", ["install", path.join(work, packed!.filename), "--prefer-offline", "--no-audit", "--no-fund", "--ignore-scripts"], {
    cwd: consumer,
    timeout: 240_000,
  });
}, 300_000);
afterAll(async () => {
  await s?.close();
  if (work) await rm(work, { recursive: true, force: true });
});

describe("npm pack of @holdfast/client", () => {
  it("carries the compiled client and the generated code, and nothing private", async () => {
    expect(files).toEqual(expect.arrayContaining(["package.json", "dist/index.js", "dist/index.d.ts", "dist/transport-web.js", "dist/gen/holdfast/v1/ledger_pb.js", "dist/gen/holdfast/v1/errors_pb.d.ts"]));
    expect(files.filter((f) => f.startsWith("src/") || f.endsWith(".map") || f.endsWith(".tsbuildinfo"))).toEqual([]);
    const manifest = JSON.parse(await readFile(path.join(consumer, "node_modules/@holdfast/client/package.json"), "utf8")) as { dependencies: Record<string, string> };
    expect(Object.keys(manifest.dependencies).filter((name) => name.startsWith("@holdfast/"))).toEqual([]);
  });

  it("runs the README's SDK quickstart from an empty directory", async () => {
    const readme = await readFile(path.join(root, "README.md"), "utf8");
    const section = readme.slice(readme.indexOf("## The same with the SDK"));
    const quickstart = /```js\n([\s\S]*?)```/.exec(section)![1]!;
    expect(quickstart).toContain('baseUrl: "http://127.0.0.1:8080"');
    await writeFile(path.join(consumer, "quickstart.mjs"), quickstart.replace("http://127.0.0.1:8080", s.app.url));
    const { stdout } = await run(process.execPath, ["quickstart.mjs"], {
      cwd: consumer,
      env: { PATH: process.env["PATH"], HOLDFAST_API_KEY: s.keys.writer },
      timeout: 30_000,
    });
    expect(stdout).toBe("available after capture: 877n\nrefused, available: 877n\n");
  });

  it("type-checks for a TypeScript consumer, generated types included", async () => {
    await writeFile(
      path.join(consumer, "consumer.ts"),
      [
        'import { Holdfast, HoldStatus, InsufficientFundsError, fromAnthropicUsage, type Hold } from "@holdfast/client";',
        'import { ReserveResponseSchema } from "@holdfast/client/proto";',
        'const hf = new Holdfast({ baseUrl: "http://127.0.0.1:8080", asset: "USD" });',
        'export const hold: Promise<Hold | undefined> = hf.wallet("w").reserve({ amount: 1n }).then((r) => r.hold);',
        "export const pending: HoldStatus = HoldStatus.PENDING;",
        "export const available = (e: InsufficientFundsError): bigint | undefined => e.available;",
        "export const tokens: bigint = fromAnthropicUsage({ input_tokens: 1, output_tokens: 2 }).outputTokens;",
        "export const schema = ReserveResponseSchema.typeName;",
        "// @ts-expect-error a status is a HoldStatus, which the generated types say",
        'export const wrong: HoldStatus = "PENDING";',
        "// @ts-expect-error an amount is never an object",
        'hf.wallet("w").spend({ amount: {} });',
      ].join("\n"),
    );
    const compilerOptions = { noEmit: true, strict: true, module: "nodenext", moduleResolution: "nodenext", target: "es2022", skipLibCheck: true, types: [] };
    await writeFile(path.join(consumer, "tsconfig.json"), JSON.stringify({ compilerOptions, files: ["consumer.ts"] }));
    const tsc = path.join(root, "node_modules/typescript/bin/tsc");
    const result = await run(process.execPath, [tsc, "-p", "."], { cwd: consumer }).catch((error: { stdout: string }) => error);
    expect(result.stdout).toBe("");
  });

  it("bundles for browsers with connect-web and without Node's built-ins", async () => {
    await writeFile(path.join(consumer, "browser.mjs"), 'import { Holdfast } from "@holdfast/client";\nexport const hf = new Holdfast({ baseUrl: "https://ledger.example", apiKey: "k" });\n');
    const bundle = await build({ entryPoints: ["browser.mjs"], absWorkingDir: consumer, bundle: true, platform: "browser", format: "esm", write: false, logLevel: "silent" });
    const text = bundle.outputFiles[0]!.text;
    expect(text).toContain("connect-web");
    expect(text).not.toMatch(/node:http2|from "http2"/);
  });
});
