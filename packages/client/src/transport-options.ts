/**
 * What the client needs to reach a Holdfast server, shared by the Node and browser transports
 * (`#transport` resolves to one of them: the `browser` condition picks transport-web.ts).
 *
 * @module
 */
import type { Interceptor, Transport } from "@connectrpc/connect";

/**
 * The wire protocol. Node: `connect` (Connect binary over HTTP/2, the default), `connect-json`
 * (Connect JSON over HTTP/1.1), `grpc` (HTTP/2) or `grpc-web`. Browsers: `connect` (Connect
 * binary), `connect-json` (the default: readable in the network panel) or `grpc-web`; gRPC
 * itself needs HTTP/2 trailers, which browsers do not give to scripts.
 */
export type Protocol = "connect" | "connect-json" | "grpc" | "grpc-web";

/** Options of the transport a Holdfast client builds for itself. */
export interface TransportOptions {
  readonly baseUrl: string;
  readonly protocol: Protocol | undefined;
  readonly interceptors: Interceptor[];
  /** Browsers only: the fetch to use (default globalThis.fetch). */
  readonly fetch: typeof globalThis.fetch | undefined;
}

/** A transport and how to let go of its connections. */
export interface OwnedTransport {
  readonly transport: Transport;
  /** Closes the connections the transport keeps open (HTTP/2 sessions). */
  close(): void;
}
