import { fromBinary, toJson } from "@bufbuild/protobuf";
import { DeliverPolicy, jetstream } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import type { Command } from "commander";
import { EventSchema, type Event } from "@holdfast/gen/holdfast/v1/events_pb";
import { NAMESPACE_DEFAULT, NATS_URL_DEFAULT, readNatsTlsConfig, streamNameOf, type NatsTlsConfig } from "@holdfast/common/config";
import { eventSubjectRoot, natsTlsOptions } from "@holdfast/common/nats";
import { LEDGER_EVENT_TYPES } from "@holdfast/webhooks-core/event-types";
import { describeError } from "./describe-error.js";

/** Where the CLI writes, one line per call (the same shape as in main.ts). */
export interface TailOutput {
  out(line: string): void;
}

export interface TailOptions {
  natsUrl: string;
  /** TLS to NATS (HOLDFAST_NATS_TLS_*, as every Holdfast process reads them); none when absent. */
  natsTls?: NatsTlsConfig | null | undefined;
  stream: string;
  /** HOLDFAST_NAMESPACE of the deployment whose events to follow; `holdfast` when absent. */
  namespace?: string | undefined;
  tenant?: string | undefined;
  wallet?: string | undefined;
  /** "hold.captured" or "holdfast.hold.captured"; a trailing ".>"-style prefix such as "hold" matches every hold event. */
  type?: string | undefined;
  json: boolean;
  /** Replay the stream from its first event instead of following new ones only. */
  fromStart: boolean;
  /** Stop after this many events (for scripts and tests); unlimited when absent. */
  limit?: number | undefined;
  signal?: AbortSignal | undefined;
}

/** A token that may stand in a NATS subject: no dots, spaces or wildcards. */
const SUBJECT_TOKEN_PATTERN = /^[A-Za-z0-9_:-]+$/;
/** How long connecting to NATS may take before the command gives up, naming the URL. */
const CONNECT_TIMEOUT_MS = 5000;
/** The event types on the stream, without the `holdfast.` prefix: `hold.captured`. */
const TAIL_TYPES: readonly string[] = LEDGER_EVENT_TYPES.map((type) => type.replace(/^holdfast\./, ""));
/** Their kinds: `hold` stands for every hold event. */
const TAIL_KINDS: ReadonlySet<string> = new Set(TAIL_TYPES.map((type) => type.slice(0, type.indexOf("."))));

/** The subject filter for the options: <namespace>.events.<tenant>.<wallet>.<kind>.<action>. */
export function tailSubject(options: Pick<TailOptions, "tenant" | "wallet" | "type" | "namespace">): string {
  for (const [name, value] of [["--tenant", options.tenant], ["--wallet", options.wallet]] as const) {
    if (value !== undefined && !SUBJECT_TOKEN_PATTERN.test(value)) {
      throw new Error(`${name} must be 1 or more characters of A-Z, a-z, 0-9, _, : or -`);
    }
  }
  const type = options.type === undefined ? undefined : checkTailType(options.type);
  const tail = type === undefined ? ">" : type.includes(".") ? type : `${type}.*`;
  return `${eventSubjectRoot(options.namespace)}.${options.tenant ?? "*"}.${options.wallet ?? "*"}.${tail}`;
}

/**
 * The type or kind to follow, as the subject spells it, or an error: a type nothing publishes
 * would match nothing, and the command would wait forever. Accepts `hold.captured`,
 * `holdfast.hold.captured`, `hold`, `hold.*` and `holdfast.hold.*` (the webhook filters' form).
 */
function checkTailType(value: string): string {
  const type = value.replace(/^holdfast\./, "").replace(/\.\*$/, "");
  if (!TAIL_TYPES.includes(type) && !TAIL_KINDS.has(type)) {
    throw new Error(`--type ${JSON.stringify(value.slice(0, 64))} is not an event type; use a kind (${[...TAIL_KINDS].join(", ")}) ` +
      `or a type (${TAIL_TYPES.join(", ")})`);
  }
  return type;
}

/**
 * A NATS server URL fit for an error message: NATS takes a token in the user part, so both
 * user and password are dropped; a bare `host:port` without `@` is shown as it is.
 */
function withoutCredentials(server: string): string {
  if (!URL.canParse(server) || !server.includes("://")) return server.includes("@") ? "(not a URL)" : server;
  const url = new URL(server);
  url.username = "";
  url.password = "";
  return url.toString().replace(/\/$/, "");
}

/** One readable line per event. */
export function formatEvent(event: Event): string {
  const payload = event.payload.value as { transfer?: { amount: bigint }; hold?: { holdId: string } } | undefined;
  const parts = [
    event.occurredAt ? new Date(Number(event.occurredAt.seconds) * 1000 + event.occurredAt.nanos / 1e6).toISOString() : "-",
    event.walletId,
    `#${event.sequence}`,
    event.type.replace(/^holdfast\./, ""),
  ];
  if (event.asset) parts.push(event.asset);
  if (payload?.transfer) parts.push(`amount=${payload.transfer.amount}`);
  if (payload?.hold) parts.push(`hold=${payload.hold.holdId}`);
  if (event.balance) parts.push(`available=${event.balance.available}`);
  return parts.join("  ");
}

/** Follows the event stream and prints each event; resolves when aborted or the limit is hit. */
export async function tailEvents(options: TailOptions, output: TailOutput): Promise<number> {
  const subject = tailSubject(options);
  const where = `NATS at ${options.natsUrl.split(",").map(withoutCredentials).join(",")}`;
  const tls = options.natsTls ? { tls: await natsTlsOptions(options.natsTls) } : {};
  const nc = await connect({ servers: options.natsUrl.split(","), name: "holdfast-cli-tail", timeout: CONNECT_TIMEOUT_MS, ...tls }).catch((err: unknown) => {
    throw new Error(`cannot connect to ${where}: ${describeError(err)}`);
  });
  let seen = 0;
  try {
    const consumer = await jetstream(nc).consumers.get(options.stream, {
      filter_subjects: subject,
      deliver_policy: options.fromStart ? DeliverPolicy.All : DeliverPolicy.New,
    }).catch((err: unknown) => {
      throw new Error(`cannot read the stream ${options.stream} on ${where} (is --namespace or --stream right?): ` +
        `${describeError(err)}`);
    });
    const messages = await consumer.consume();
    const stop = () => void messages.close();
    options.signal?.addEventListener("abort", stop, { once: true });
    for await (const m of messages) {
      const event = fromBinary(EventSchema, m.data);
      output.out(options.json ? JSON.stringify(toJson(EventSchema, event)) : formatEvent(event));
      seen++;
      if (options.limit !== undefined && seen >= options.limit) {
        break;
      }
    }
    options.signal?.removeEventListener("abort", stop);
  } finally {
    await nc.close();
  }
  return seen;
}

/** `holdfast events tail`: registered on the CLI program. */
export function addEventsCommands(program: Command, output: TailOutput): void {
  program
    .command("events")
    .description("the event stream")
    .command("tail")
    .description("follow events live, one line each (filter by tenant, wallet or type)")
    .option("--nats-url <url>", "NATS server URL", process.env["NATS_URL"] ?? NATS_URL_DEFAULT)
    .option("--namespace <name>", "the deployment's namespace on NATS", process.env["HOLDFAST_NAMESPACE"] ?? NAMESPACE_DEFAULT)
    .option("--stream <name>", "JetStream stream (default: the namespace's, <NAMESPACE>_EVENTS)", process.env["HOLDFAST_STREAM_NAME"])
    .option("--tenant <name-or-id>", "only this tenant, by name or id")
    .option("--wallet <id>", "only this wallet")
    .option("--type <type>", "only this type, e.g. hold.captured, or hold for every hold event")
    .option("--from-start", "replay from the first event in the stream", false)
    .option("--limit <n>", "stop after n events", (v) => Number.parseInt(v, 10))
    .option("--json", "one protobuf-JSON object per line", false)
    .action(async (opts: { natsUrl: string; namespace: string; stream?: string; tenant?: string; wallet?: string; type?: string; fromStart: boolean; limit?: number; json: boolean }) => {
      const abort = new AbortController();
      process.once("SIGINT", () => abort.abort());
      const natsTls = readNatsTlsConfig(process.env);
      await tailEvents({ ...opts, natsTls, stream: opts.stream ?? streamNameOf(opts.namespace), signal: abort.signal }, output);
    });
}
