import { fromBinary, toJson } from "@bufbuild/protobuf";
import { DeliverPolicy, jetstream } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import type { Command } from "commander";
import { EventSchema, type Event } from "@holdfast/gen/holdfast/v1/events_pb";
import { NAMESPACE_DEFAULT, NATS_URL_DEFAULT, streamNameOf } from "@holdfast/common/config";
import { eventSubjectRoot } from "@holdfast/common/nats";

/** Where the CLI writes, one line per call (the same shape as in main.ts). */
export interface TailOutput {
  out(line: string): void;
}

export interface TailOptions {
  natsUrl: string;
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

/** The subject filter for the options: <namespace>.events.<tenant>.<wallet>.<kind>.<action>. */
export function tailSubject(options: Pick<TailOptions, "tenant" | "wallet" | "type" | "namespace">): string {
  for (const [name, value] of [["--tenant", options.tenant], ["--wallet", options.wallet]] as const) {
    if (value !== undefined && !SUBJECT_TOKEN_PATTERN.test(value)) {
      throw new Error(`${name} must be 1 or more characters of A-Z, a-z, 0-9, _, : or -`);
    }
  }
  const type = options.type?.replace(/^holdfast\./, "");
  if (type !== undefined && !/^[a-z_]+(\.[a-z_]+)?$/.test(type)) {
    throw new Error("--type must look like hold.captured or hold");
  }
  const tail = type === undefined ? ">" : type.includes(".") ? type : `${type}.*`;
  return `${eventSubjectRoot(options.namespace)}.${options.tenant ?? "*"}.${options.wallet ?? "*"}.${tail}`;
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
  const nc = await connect({ servers: options.natsUrl.split(","), name: "holdfast-cli-tail", timeout: 5000 });
  let seen = 0;
  try {
    const consumer = await jetstream(nc).consumers.get(options.stream, {
      filter_subjects: tailSubject(options),
      deliver_policy: options.fromStart ? DeliverPolicy.All : DeliverPolicy.New,
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
    .option("--tenant <id>", "only this tenant")
    .option("--wallet <id>", "only this wallet")
    .option("--type <type>", "only this type, e.g. hold.captured, or hold for every hold event")
    .option("--from-start", "replay from the first event in the stream", false)
    .option("--limit <n>", "stop after n events", (v) => Number.parseInt(v, 10))
    .option("--json", "one protobuf-JSON object per line", false)
    .action(async (opts: { natsUrl: string; namespace: string; stream?: string; tenant?: string; wallet?: string; type?: string; fromStart: boolean; limit?: number; json: boolean }) => {
      const abort = new AbortController();
      process.once("SIGINT", () => abort.abort());
      await tailEvents({ ...opts, stream: opts.stream ?? streamNameOf(opts.namespace), signal: abort.signal }, output);
    });
}
