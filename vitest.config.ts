import { defineConfig } from "vitest/config";

// Tests run against real PostgreSQL and NATS servers. Each test file gets its own database,
// cloned from a migrated template that test/global-setup.ts builds once per migration set.
export default defineConfig({
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
