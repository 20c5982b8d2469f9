/**
 * The transport of the client in Node: connect-node over HTTP/2 (Connect or gRPC), or HTTP/1.1
 * for Connect JSON and gRPC-Web. One HTTP/2 session per client, closed by `close()`; an idle
 * session does not keep the process alive (connect-node unrefs it).
 *
 * @module
 */
import { Http2SessionManager, createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import type { OwnedTransport, TransportOptions } from "./transport-options.js";

/** Builds the transport for `options.protocol` (default `connect`, binary over HTTP/2). */
export function createDefaultTransport(options: TransportOptions): OwnedTransport {
  const { baseUrl, interceptors } = options;
  switch (options.protocol ?? "connect") {
    case "connect": {
      const sessionManager = new Http2SessionManager(baseUrl);
      return { transport: createConnectTransport({ baseUrl, httpVersion: "2", useBinaryFormat: true, interceptors, sessionManager }), close: () => sessionManager.abort() };
    }
    case "grpc": {
      const sessionManager = new Http2SessionManager(baseUrl);
      return { transport: createGrpcTransport({ baseUrl, interceptors, sessionManager }), close: () => sessionManager.abort() };
    }
    case "connect-json":
      return { transport: createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: false, interceptors }), close: () => {} };
    case "grpc-web":
      return { transport: createGrpcWebTransport({ baseUrl, httpVersion: "1.1", interceptors }), close: () => {} };
  }
}
