#!/usr/bin/env node
// Fails when an import crosses a package boundary other than through the package's name.
//
// Every folder with a package.json listed in the root "workspaces" is a package. A relative
// import must stay inside its own package; another package is imported as `@holdfast/<name>/…`,
// only through a subpath its package.json exports, and only when the importing package lists it
// in its dependencies. Files outside every package (test/) may import any package by name,
// still only through its exports. Run by .ci/run; `npm run lint:imports` runs it by hand.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
const readJson = (file) => JSON.parse(readFileSync(path.join(root, file), "utf8"));

/** Workspace folders, expanded from the root package.json's patterns (`dir` or `dir/*`). */
function workspaces() {
  const files = execFileSync("git", ["ls-files", "--cached", "--others", "--exclude-standard", "*package.json"], {
    cwd: root,
    encoding: "utf8",
  }).split("\n");
  const patterns = readJson("package.json").workspaces;
  return patterns.flatMap((pattern) =>
    files
      .map((file) => path.dirname(file))
      .filter((dir) => (pattern.endsWith("/*") ? path.dirname(dir) === pattern.slice(0, -2) : dir === pattern)),
  );
}

const packages = workspaces().map((dir) => {
  const json = readJson(path.join(dir, "package.json"));
  return { dir, name: json.name, exports: Object.keys(json.exports ?? {}), dependencies: Object.keys(json.dependencies ?? {}) };
});
const byName = new Map(packages.map((p) => [p.name, p]));
const packageOf = (file) => packages.find((p) => file.startsWith(p.dir + "/"));

/** True when `subpath` (such as `./pg`) matches an export key, including `./*` patterns. */
function exported(pkg, subpath) {
  return pkg.exports.some((key) =>
    key.includes("*") ? subpath.startsWith(key.slice(0, key.indexOf("*"))) && subpath.endsWith(key.slice(key.indexOf("*") + 1)) : key === subpath,
  );
}

const sources = execFileSync("git", ["ls-files", "--cached", "--others", "--exclude-standard", "*.ts", "*.mts", "*.tsx"], {
  cwd: root,
  encoding: "utf8",
})
  .split("\n")
  .filter((file) => file && !file.includes("/dist/") && !file.startsWith("gen/src/"));

const importPattern = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)["']([^"']+)["']/g;
const problems = [];
for (const file of sources) {
  const owner = packageOf(file);
  const text = readFileSync(path.join(root, file), "utf8");
  for (const match of text.matchAll(importPattern)) {
    const spec = match[1];
    const line = text.slice(0, match.index).split("\n").length;
    const where = `${file}:${line}`;
    if (spec.startsWith(".")) {
      const target = path.normalize(path.join(path.dirname(file), spec));
      const targetOwner = packageOf(target);
      if (targetOwner !== owner) problems.push(`${where}: "${spec}" reaches into ${targetOwner?.dir ?? target}; import it by package name`);
      continue;
    }
    if (!spec.startsWith("@holdfast/")) continue;
    const [scope, base, ...rest] = spec.split("/");
    const target = byName.get(`${scope}/${base}`);
    if (!target) {
      problems.push(`${where}: "${spec}" names no workspace package`);
      continue;
    }
    const subpath = rest.length ? `./${rest.join("/")}` : ".";
    if (!exported(target, subpath)) problems.push(`${where}: "${spec}" is not in ${target.name}'s exports`);
    if (owner && owner !== target && !owner.dependencies.includes(target.name)) {
      problems.push(`${where}: ${owner.name} imports ${target.name} without listing it in its dependencies`);
    }
  }
}

if (problems.length > 0) {
  console.error(`${problems.length} import(s) cross a package boundary:\n  ${problems.join("\n  ")}`);
  process.exit(1);
}
console.log(`imports: ${sources.length} files, ${packages.length} packages, no boundary crossed`);
