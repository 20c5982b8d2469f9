/**
 * Which deployment a process belongs to, and what a consumer does with an event it cannot
 * attribute to it.
 *
 * A deployment is one database and the processes that use it. Its id is generated once, by the
 * first process that asks, and kept in the one-row `deployment` table (migration
 * 0012_deployment.sql); the event stream and every durable consumer on NATS record the id of
 * the deployment that owns them (nats.ts), so a second deployment pointed at the same NATS
 * server and namespace is refused instead of taking the first one's events. See
 * docs/events.md, "Namespaces".
 *
 * @module
 */
import type pg from "pg";
import type { Logger } from "pino";
import { isUuid } from "./patterns.js";

/** Anything that runs a query: a pool or a client. */
type Queryable = Pick<pg.Pool | pg.PoolClient, "query">;

/**
 * The database's deployment id: read, or generated and stored on first use (concurrent first
 * uses agree: the table holds one row, and the losers read the winner's). Generated lazily
 * rather than by the migration, so that databases cloned from a freshly migrated template each
 * get their own.
 */
export async function readDeploymentId(db: Queryable): Promise<string> {
  await db.query({
    name: "deployment_ensure",
    text: "insert into deployment (deployment_id) values (gen_random_uuid()) on conflict do nothing",
  });
  const { rows } = await db.query<{ deployment_id: string }>({
    name: "deployment_read",
    text: "select deployment_id from deployment",
  });
  const id = rows[0]?.deployment_id;
  if (id === undefined) throw new Error("the deployment table is empty after inserting its row");
  return id;
}

/**
 * A lazily read deployment id that is read again after a failure (the database away at start)
 * and kept once known.
 */
export function deploymentIdOf(db: Queryable): () => Promise<string> {
  let known: string | null = null;
  return async () => (known ??= await readDeploymentId(db));
}

/** How often an unknown tenant is logged, at most: once per tenant per this interval. */
export const UNKNOWN_TENANT_LOG_INTERVAL_MS = 60_000;
/** Tenants known to exist that are remembered, so steady traffic needs no look-up. */
const KNOWN_TENANTS_MAX = 100_000;
/** Unknown tenants whose counts are kept between log lines; more are counted, logged at once. */
const UNKNOWN_TENANTS_TRACKED_MAX = 1000;

export interface TenantGuardOptions {
  readonly pool: pg.Pool;
  readonly logger: Logger;
  /** Who consumes (`webhooks`, `billing:stripe`): named in log lines and metrics. */
  readonly consumer: string;
  /** Called with how many events of unknown tenants were just set aside (for a metric). */
  readonly onUnknown?: (count: number) => void;
  readonly logIntervalMs?: number;
}

/** What {@link TenantGuard.split} makes of a batch. */
export interface TenantSplit<T> {
  readonly known: T[];
  readonly unknown: T[];
}

/**
 * Sorts a consumer's events into those of tenants this database knows and those it does not.
 * The consumer settles the unknown ones without processing them, but never silently: each
 * unknown tenant is logged at once, then at most once per interval with the count of events
 * since, and every such event is counted (`onUnknown`). Known tenants are cached (tenants are
 * never deleted), so a look-up happens only for a tenant not seen before.
 */
export function createTenantGuard(options: TenantGuardOptions) {
  const known = new Set<string>();
  const log = createUnknownTenantLog(options);
  let total = 0;

  async function lookUp(tenantIds: string[]): Promise<void> {
    const { rows } = await options.pool.query<{ id: string }>({
      name: "tenant_guard_known",
      text: "select id from tenants where id = any($1::uuid[])",
      values: [tenantIds],
    });
    if (known.size + rows.length > KNOWN_TENANTS_MAX) known.clear();
    for (const row of rows) known.add(row.id);
  }

  return {
    /** Splits `items` by whether their tenant exists here; throws when the database is away. */
    async split<T>(items: readonly T[], tenantOf: (item: T) => string): Promise<TenantSplit<T>> {
      // A tenant id that is no UUID names no tenant; it is unknown without asking.
      const unseen = [...new Set(items.map(tenantOf).filter((id) => !known.has(id) && isUuid(id)))];
      if (unseen.length > 0) await lookUp(unseen);
      const result: TenantSplit<T> = { known: [], unknown: [] };
      const counts = new Map<string, number>();
      for (const item of items) {
        const tenantId = tenantOf(item);
        if (known.has(tenantId)) {
          result.known.push(item);
          continue;
        }
        result.unknown.push(item);
        counts.set(tenantId, (counts.get(tenantId) ?? 0) + 1);
      }
      const now = Date.now();
      for (const [tenantId, count] of counts) log.note(tenantId, count, now);
      total += result.unknown.length;
      if (result.unknown.length > 0) options.onUnknown?.(result.unknown.length);
      return result;
    },
    /** Events of unknown tenants set aside since start. */
    unknownTotal: (): number => total,
    flush: log.flush,
    close: log.close,
  };
}

/**
 * The log lines of unknown tenants: a tenant's first events at once, then at most one line per
 * interval with the count since the last line. The counts of at most
 * UNKNOWN_TENANTS_TRACKED_MAX tenants are held back; beyond that each batch is logged at once.
 */
function createUnknownTenantLog(options: TenantGuardOptions) {
  const intervalMs = options.logIntervalMs ?? UNKNOWN_TENANT_LOG_INTERVAL_MS;
  const held = new Map<string, { pending: number; loggedAt: number }>();

  function log(tenantId: string, count: number): void {
    options.logger.warn(
      { tenantId, events: count, consumer: options.consumer },
      "event of a tenant this deployment's database does not know; not processed. Another deployment may publish into this namespace (docs/events.md, \"Namespaces\")",
    );
  }

  function flushOne(tenantId: string, entry: { pending: number; loggedAt: number }, now: number): void {
    if (entry.pending > 0) log(tenantId, entry.pending);
    entry.pending = 0;
    entry.loggedAt = now;
  }

  /** Logs the counts held back for longer than the interval; forgets quiet tenants. */
  function flush(now = Date.now()): void {
    for (const [tenantId, entry] of held) {
      if (now - entry.loggedAt < intervalMs) continue;
      if (entry.pending === 0) held.delete(tenantId);
      else flushOne(tenantId, entry, now);
    }
  }
  const timer = setInterval(() => flush(), intervalMs);
  timer.unref();

  return {
    /** Counts `count` events of an unknown tenant: logged at once the first time, then held back. */
    note(tenantId: string, count: number, now: number): void {
      const entry = held.get(tenantId);
      if (entry === undefined) {
        if (held.size < UNKNOWN_TENANTS_TRACKED_MAX) held.set(tenantId, { pending: 0, loggedAt: now });
        log(tenantId, count);
        return;
      }
      entry.pending += count;
      if (now - entry.loggedAt >= intervalMs) flushOne(tenantId, entry, now);
    },
    flush,
    /** Stops the timer and logs every count still held back. */
    close(): void {
      clearInterval(timer);
      flush(Number.POSITIVE_INFINITY);
    },
  };
}

export type TenantGuard = ReturnType<typeof createTenantGuard>;

/** The exit code of a process that found its stream or a consumer owned by another deployment. */
export const DEPLOYMENT_CONFLICT_EXIT_CODE = 3;

/**
 * Ends a process that must not run here (its namespace on NATS belongs to another deployment):
 * the error's message, which says how to fix it, as one line on stderr and in the log; then
 * `stop` (bounded by the caller's own drain limits) and exit code 3.
 */
export async function exitOnDeploymentConflict(logger: Logger, err: Error, stop?: () => Promise<void>): Promise<never> {
  process.stderr.write(`refusing to run: ${err.message}\n`);
  logger.fatal({ err }, "refusing to run: the namespace on NATS belongs to another deployment");
  await stop?.().catch((stopErr: unknown) => logger.error({ err: stopErr }, "stopping failed"));
  process.exit(DEPLOYMENT_CONFLICT_EXIT_CODE);
}
