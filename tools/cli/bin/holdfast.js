#!/usr/bin/env node
// The `holdfast` command. The CLI is written in TypeScript and compiled by `npm run build`
// (which `npm install` runs through the root `prepare` script) into this package's dist/;
// this file only finds the compiled entry point and hands it the arguments.
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const entry = new URL("../dist/main.js", import.meta.url);

if (!existsSync(fileURLToPath(entry))) {
  process.stderr.write("holdfast: the CLI is not compiled yet; run npm run build first\n");
  process.exit(1);
}

// A reader that stops early (`holdfast ... | head`) closes the pipe: that ends the command
// quietly, as for any Unix tool, instead of an unhandled EPIPE.
process.stdout.on("error", (err) => {
  if (err.code === "EPIPE") process.exit(0);
  throw err;
});

const { main } = await import(entry.href);
process.exitCode = await main(process.argv);
