/**
 * The transport of the client in browsers: connect-web over fetch, Connect (JSON by default,
 * readable in the network panel) or gRPC-Web. The server must allow the page's origin
 * (HOLDFAST_CORS_ORIGINS); the API key travels in the `authorization` header, which its CORS
 * rules allow.
 *
 * @module
 */
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import type { OwnedTransport, TransportOptions } from "./transport-options.js";

/** Builds the transport for `options.protocol` (default `connect-json`). */
export function createDefaultTransport(options: TransportOptions): OwnedTransport {
  const { baseUrl, interceptors } = options;
  const fetch = options.fetch === undefined ? {} : { fetch: options.fetch };
  switch (options.protocol ?? "connect-json") {
    case "connect":
      return { transport: createConnectTransport({ baseUrl, useBinaryFormat: true, interceptors, ...fetch }), close: () => {} };
    case "connect-json":
      return { transport: createConnectTransport({ baseUrl, useBinaryFormat: false, interceptors, ...fetch }), close: () => {} };
    case "grpc-web":
      return { transport: createGrpcWebTransport({ baseUrl, interceptors, ...fetch }), close: () => {} };
    case "grpc":
      throw new TypeError("Holdfast: browsers cannot speak gRPC; use protocol connect, connect-json or grpc-web");
  }
}
