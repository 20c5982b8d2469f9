// A Holdfast event subscriber: follow one tenant's events (optionally one wallet's) from the
// JetStream stream, decode them with the generated code, drop duplicates by event id and
// notice gaps in a wallet's sequence.
//
//   npx tsx examples/01-subscribe-events.ts <tenant_id> [wallet_id]
//
// NATS_URL (default nats://127.0.0.1:4222), HOLDFAST_NAMESPACE (default holdfast; the
// subjects are <namespace>.events.>) and HOLDFAST_STREAM_NAME (default <NAMESPACE>_EVENTS,
// HOLDFAST_EVENTS) say where to read, as they do for the ledger (docs/events.md).
import { fromBinary } from "@bufbuild/protobuf";
import { DeliverPolicy, jetstream } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { EventSchema } from "@holdfast/gen/holdfast/v1/events_pb";

const [tenant = "*", wallet = "*"] = process.argv.slice(2);
const nc = await connect({ servers: process.env["NATS_URL"] ?? "nats://127.0.0.1:4222" });
const namespace = process.env["HOLDFAST_NAMESPACE"] ?? "holdfast";
const stream = process.env["HOLDFAST_STREAM_NAME"] ?? `${namespace.toUpperCase()}_EVENTS`;

// An ordered consumer replays the stream in order and needs no server-side state. A service
// that must resume where it stopped would use a durable consumer instead.
const consumer = await jetstream(nc).consumers.get(stream, {
  filter_subjects: `${namespace}.events.${tenant}.${wallet}.>`,
  deliver_policy: DeliverPolicy.All,
});

// Delivery is at least once: remember recent event ids (bounded) and skip repeats.
const seen_ids_max = 100_000;
const seen = new Set<string>();
const lastSequence = new Map<string, bigint>();

for await (const message of await consumer.consume()) {
  const event = fromBinary(EventSchema, message.data);
  if (seen.has(event.eventId)) continue;
  seen.add(event.eventId);
  if (seen.size > seen_ids_max) seen.delete(seen.values().next().value!);

  const previous = lastSequence.get(event.walletId) ?? event.sequence - 1n;
  if (event.sequence !== previous + 1n) {
    console.warn(`wallet ${event.walletId}: sequence jumped from ${previous} to ${event.sequence}`);
  }
  lastSequence.set(event.walletId, event.sequence);

  switch (event.payload.case) {
    case "holdCaptured":
      console.log(`${event.walletId} captured ${event.payload.value.transfer?.amount} ${event.asset}`);
      break;
    case "spendCompleted":
      console.log(`${event.walletId} spent ${event.payload.value.transfer?.amount} ${event.asset}`);
      break;
    default:
      console.log(`${event.walletId} ${event.type} available=${event.balance?.available ?? "-"}`);
  }
}
