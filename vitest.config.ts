import { defaultServerConditions } from "vite";
import { defineConfig } from "vitest/config";

// Tests run against real PostgreSQL and NATS servers. Each test file gets its own database,
// cloned from a migrated template that test/global-setup.ts builds once per migration set.
//
// Workspace packages export a "source" condition next to their compiled dist/ files: tests
// (like `tsc -b`, through customConditions) resolve @holdfast/* to the TypeScript sources, so a
// test never runs stale compiled code.
export default defineConfig({
  resolve: { conditions: ["source", ...defaultServerConditions] },
  ssr: { resolve: { conditions: ["source", ...defaultServerConditions], externalConditions: ["source"] } },
  test: {
    include: ["test/**/*.test.ts"],
    // Forks rather than threads: each file gets a whole process, so pg pools, timers and
    // native handles of one file cannot leak into another.
    pool: "forks",
    testTimeout: 60_000,
    // Building the template database and starting servers can take a while on a cold machine.
    hookTimeout: 120_000,
    globalSetup: ["test/global-setup.ts"],
  },
});
