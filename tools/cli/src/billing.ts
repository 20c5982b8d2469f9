/**
 * `holdfast billing backfill`: re-send a period of usage from the journal to one billing sink,
 * with a progress bar on stderr. Safe to overlap what the stream already sent: every record's
 * transfer id is the engine's idempotency key.
 *
 * @module
 */
import { readFile } from "node:fs/promises";
import type { Command } from "commander";
import type pg from "pg";
import { pino } from "pino";
import { readLogConfig, withoutPassword } from "@holdfast/common/config";
import type { Env } from "@holdfast/common/env";
import { createPool } from "@holdfast/common/pg";
import { backfill } from "@holdfast/billing-core/backfill";
import { checkSinkTenants, loadBillingConfig, readBillingConfigPath, type BillingConfig } from "@holdfast/billing-core/config";
import { describeError } from "./describe-error.js";

/** Where the command writes, one line per call (the same shape as CliOutput in main.ts). */
export interface BillingOutput {
  out(line: string): void;
  err(line: string): void;
}

/** The backfill runs one query at a time; the second connection is slack. */
const POOL_SIZE_MAX = 2;
const CONNECT_TIMEOUT_MS = 5_000;
/** A page read walks the journal's primary key; give it longer than an interactive query. */
const STATEMENT_TIMEOUT_MS = 120_000;
const PROGRESS_BAR_WIDTH = 30;
/** Without a terminal, a progress line every this many percent. */
const PROGRESS_LINE_STEP_PERCENT = 10;
/** With a terminal, redraw at most this often. */
const PROGRESS_REDRAW_MS = 100;
/**
 * What the secrets of the sinks a backfill does not send to read as while the file is
 * validated; they are dropped with their sinks before anything is sent.
 */
const UNUSED_SECRET_STAND_IN = "unused-by-this-backfill";

interface BackfillCliOptions {
  sink: string;
  since: string;
  until?: string;
  tenant?: string;
  config?: string;
}

/** Registers `holdfast billing backfill` on the program. */
export function addBillingCommands(program: Command, output: BillingOutput): void {
  program
    .command("billing")
    .description("the billing-stream worker's sinks")
    .command("backfill")
    .description("re-send usage from the journal to a billing sink (idempotent: already-sent usage is deduplicated by the engine)")
    .requiredOption("--sink <name>", "the sink's name in the billing configuration")
    .requiredOption("--since <time>", "usage created at or after this ISO 8601 time")
    .option("--until <time>", "usage created before this ISO 8601 time (default: now)")
    .option("--tenant <name-or-id>", "only this tenant, by name or id")
    .option("--config <file>", "billing configuration file (default: HOLDFAST_BILLING_CONFIG)")
    .action(async (options: BackfillCliOptions, command: Command) => {
      await runBackfill(options, String(command.optsWithGlobals()["databaseUrl"]), output);
    });
}

async function runBackfill(options: BackfillCliOptions, databaseUrl: string, output: BillingOutput): Promise<void> {
  const since = parseTime("--since", options.since);
  const until = options.until === undefined ? undefined : parseTime("--until", options.until);
  const configPath = options.config ?? readBillingConfigPath(process.env);
  if (configPath === null || configPath === "") throw new Error("name the billing configuration with --config or HOLDFAST_BILLING_CONFIG");
  const config = await loadSinkConfig(configPath, options.sink);
  const logger = pino({ level: readLogConfig(process.env, "warn").logLevel }, pino.destination(2));
  const pool = createPool(
    { databaseUrl, pgPoolMax: POOL_SIZE_MAX, pgConnectTimeoutMs: CONNECT_TIMEOUT_MS, pgStatementTimeoutMs: STATEMENT_TIMEOUT_MS },
    logger,
    { applicationName: "holdfast-cli-billing-backfill" },
  );
  // The rule the worker applies at start: with several tenants, a sink must say whose usage it bills.
  await checkDatabase(pool, databaseUrl).then(() => checkSinkTenants(config, pool)).catch(async (err: unknown) => {
    await pool.end();
    throw err;
  });
  const abort = new AbortController();
  const onSigint = () => abort.abort();
  process.once("SIGINT", onSigint);
  const progress = createProgress(output);
  const started = Date.now();
  try {
    const result = await backfill({
      pool,
      config,
      sinkName: options.sink,
      since,
      until,
      tenantId: options.tenant,
      logger,
      signal: abort.signal,
      onProgress: progress.update,
    });
    progress.finish();
    const m = result.metrics;
    const seconds = Math.max(0.001, (Date.now() - started) / 1000);
    output.out(
      `backfill to ${options.sink}: ${result.total} usage records; sent ${m.sent}, dead-lettered ${m.deadLettered}, ` +
        `skipped ${m.skipped}, failed ${m.failed} in ${seconds.toFixed(1)} s (${Math.round(m.sent / seconds)}/s)`,
    );
    if (m.failed > 0) {
      const endpoint = config.sinks[0] === undefined ? "" : ` at ${withoutPassword(config.sinks[0].endpoint)}`;
      throw new Error(`${m.failed} usage records could not be sent (the sink${endpoint} is unavailable); run the same command again: what was sent is deduplicated`);
    }
    if (abort.signal.aborted) throw new Error("interrupted; run the same command again to finish");
  } finally {
    process.removeListener("SIGINT", onSigint);
    await pool.end();
  }
}

/**
 * The billing configuration with only the sink `sinkName`, validated whole. A backfill sends to
 * one sink, so only that sink's secret must be set: the other sinks' unset `secret_env`
 * variables read as a stand-in while the file is checked, and those sinks are then dropped.
 */
async function loadSinkConfig(configPath: string, sinkName: string): Promise<BillingConfig> {
  const config = await loadBillingConfig(configPath, await envForSink(configPath, sinkName));
  const sinks = config.sinks.filter((sink) => sink.name === sinkName);
  if (sinks.length === 0) {
    throw new Error(`no sink named ${JSON.stringify(sinkName)} in ${configPath} (sinks: ${config.sinks.map((s) => s.name).join(", ")})`);
  }
  return { ...config, sinks };
}

/** This process's environment, with a stand-in for every other sink's unset secret variable. */
async function envForSink(configPath: string, sinkName: string): Promise<Env> {
  // loadBillingConfig reports an unreadable or malformed file; here it only means no stand-ins.
  const json = await readFile(configPath, "utf8").then((text) => JSON.parse(text) as unknown, () => undefined);
  const sinksJson = (json as { sinks?: unknown } | undefined)?.sinks;
  const sinks = Array.isArray(sinksJson) ? (sinksJson as { name?: unknown; secret_env?: unknown }[]) : [];
  const own = new Set(sinks.filter((sink) => sink?.name === sinkName).map((sink) => sink.secret_env));
  const env: Record<string, string | undefined> = { ...process.env };
  for (const sink of sinks) {
    const name = sink?.secret_env;
    if (typeof name === "string" && !own.has(name) && (env[name] ?? "").trim() === "") {
      env[name] = UNUSED_SECRET_STAND_IN;
    }
  }
  return env;
}

/** Fails with one line naming the database (without its password) when it does not answer. */
async function checkDatabase(pool: pg.Pool, databaseUrl: string): Promise<void> {
  await pool.query("select 1").catch((err: unknown) => {
    throw new Error(`cannot connect to PostgreSQL at ${withoutPassword(databaseUrl)}: ${describeError(err)}`);
  });
}

function parseTime(flag: string, value: string): Date {
  const at = Date.parse(value);
  if (Number.isNaN(at)) throw new Error(`${flag} must be an ISO 8601 time such as 2026-01-01T00:00:00Z`);
  return new Date(at);
}

/**
 * A progress bar: redrawn in place on a terminal, otherwise a line every 10 percent (so logs
 * and tests see it without carriage returns).
 */
function createProgress(output: BillingOutput) {
  const tty = process.stderr.isTTY === true;
  const started = Date.now();
  let lastDraw = 0;
  let lastStep = -1;
  let drawn = false;
  const line = (done: number, total: number) => {
    const fraction = total === 0 ? 1 : Math.min(1, done / total);
    const filled = Math.round(fraction * PROGRESS_BAR_WIDTH);
    const rate = Math.round(done / Math.max(0.001, (Date.now() - started) / 1000));
    return `[${"#".repeat(filled)}${"-".repeat(PROGRESS_BAR_WIDTH - filled)}] ${Math.floor(fraction * 100)}% ${done}/${total} usage records, ${rate}/s`;
  };
  let latest = { done: 0, total: 0 };
  return {
    update(done: number, total: number): void {
      latest = { done, total };
      if (tty) {
        if (Date.now() - lastDraw < PROGRESS_REDRAW_MS && done < total) return;
        lastDraw = Date.now();
        drawn = true;
        process.stderr.write(`\r${line(done, total)}`);
        return;
      }
      const step = total === 0 ? 100 : Math.floor((done / total) * 100 / PROGRESS_LINE_STEP_PERCENT) * PROGRESS_LINE_STEP_PERCENT;
      if (step > lastStep) {
        lastStep = step;
        output.err(line(done, total));
      }
    },
    finish(): void {
      if (tty && drawn) process.stderr.write(`\r${line(latest.done, latest.total)}\n`);
    },
  };
}
