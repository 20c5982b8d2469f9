import { defaultClientConditions, defineConfig } from "vite";

// The console is served by the ledger at /console (docs/console.md), so every asset URL is
// absolute under that prefix and hashed, which lets the ledger cache assets for a year.
//
// "source" resolves @holdfast/client (and the generated code it imports) to its TypeScript
// sources, as tsc -b and the tests do, so the console never bundles a stale dist/; with
// "browser" first, the client's fetch transport (connect-web) is taken instead of the Node one.
export default defineConfig({
  base: "/console/",
  resolve: { conditions: ["source", ...defaultClientConditions] },
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
  build: {
    outDir: "dist",
    assetsDir: "assets",
    emptyOutDir: true,
    target: "es2022",
    // The console is small; one warning threshold above its size keeps a regression visible.
    chunkSizeWarningLimit: 400,
  },
});
