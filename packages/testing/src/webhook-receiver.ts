/**
 * A webhook receiver as a customer would write one, for the fault battery and tests that only
 * need to count: a real HTTP server on 127.0.0.1 that verifies every request's Standard
 * Webhooks signature with the `standardwebhooks` library, answers 200 to a verified request and
 * 401 to any other, and counts the verified deliveries of each webhook-id. Receivers dedupe on
 * webhook-id (docs/webhooks.md: delivery is at least once), so the counts say both whether an
 * event arrived and how often it arrived again.
 *
 * @module
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";

import { Webhook } from "standardwebhooks";

/** Largest body the receiver reads; a larger one is refused 413 and counted as rejected. */
const BODY_BYTES_MAX = 1024 * 1024;

/** What a receiver has counted so far. */
export interface WebhookReceiverCounts {
  /** Verified deliveries per webhook-id (the event id): 1 once, more for each repeat. */
  readonly deliveries: ReadonlyMap<string, number>;
  /** The event type of each delivered webhook-id, from the verified body. */
  readonly types: ReadonlyMap<string, string>;
  /** Requests refused because no secret verified them (or the body was too large). */
  readonly rejected: number;
}

/** A running receiver. */
export interface WebhookReceiver extends WebhookReceiverCounts {
  /** The endpoint URL to register, `http://127.0.0.1:<port>/hooks`. */
  readonly url: string;
  /** Secrets to verify with; set them once CreateEndpoint has answered. */
  secrets: string[];
  stop(): Promise<void>;
}

/** Starts a receiver on 127.0.0.1 on a free port. */
export async function startWebhookReceiver(): Promise<WebhookReceiver> {
  const deliveries = new Map<string, number>();
  const types = new Map<string, string>();
  const sockets = new Set<Socket>();
  const state = { rejected: 0 };
  const receiver = {
    url: "",
    secrets: [] as string[],
    deliveries,
    types,
    get rejected() {
      return state.rejected;
    },
    async stop() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readBody(req);
    const headers = {
      "webhook-id": String(req.headers["webhook-id"] ?? ""),
      "webhook-timestamp": String(req.headers["webhook-timestamp"] ?? ""),
      "webhook-signature": String(req.headers["webhook-signature"] ?? ""),
    };
    const payload = body === null ? null : verified(receiver.secrets, body, headers);
    if (payload === null) {
      state.rejected++;
      res.writeHead(body === null ? 413 : 401).end();
      return;
    }
    const id = headers["webhook-id"];
    deliveries.set(id, (deliveries.get(id) ?? 0) + 1);
    types.set(id, payload.type);
    res.writeHead(200).end("ok");
  }

  const server: Server = createServer((req, res) => void handle(req, res));
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  receiver.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks`;
  return receiver;
}

/** The body as text, or null when it is larger than {@link BODY_BYTES_MAX}. */
async function readBody(req: IncomingMessage): Promise<string | null> {
  const chunks: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of req) {
    bytes += (chunk as Buffer).length;
    if (bytes > BODY_BYTES_MAX) return null;
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString("utf8");
}

/** The parsed body when one of `secrets` verifies the request, else null. */
function verified(secrets: readonly string[], body: string, headers: Record<string, string>): { type: string } | null {
  for (const secret of secrets) {
    try {
      return new Webhook(secret).verify(body, headers) as { type: string };
    } catch {
      // Try the next secret; none left means the request is refused.
    }
  }
  return null;
}
