/**
 * The Node request listener that runs Connect's handlers for every protocol, with three things
 * connect-node's own adapter cannot do:
 *
 * - authenticate from the headers alone, before one byte of the body is read or decompressed,
 *   so a caller without a key cannot make the server buffer a megabyte per stream;
 * - count the request-body bytes each connection has in flight and refuse a call past the cap;
 * - answer a malformed protobuf body INVALID_ARGUMENT instead of INTERNAL (malformed-body.ts).
 *
 * A refusal is not written by hand: the call's body is replaced by one that fails with the
 * refusal, so Connect reports it in the call's own protocol exactly as an interceptor's error.
 *
 * @module
 */
import type http from "node:http";
import http2 from "node:http2";

import { Code, ConnectError, createConnectRouter, createContextValues } from "@connectrpc/connect";
import type { ConnectRouterOptions, ContextValues } from "@connectrpc/connect";
import type { UniversalHandler, UniversalServerRequest, UniversalServerResponse } from "@connectrpc/connect/protocol";
import { universalRequestFromNodeRequest, universalResponseToNodeResponse } from "@connectrpc/connect-node";
import type { ConnectRouter } from "@connectrpc/connect";
import type { Logger } from "pino";

import { CONNECTION_KEY, onAbort, type ConnectionState } from "./call-admission.js";
import { ledgerError } from "./errors.js";
import { HEALTH_SERVICE_NAME } from "./health.js";
import { refuseMalformedBody } from "./malformed-body.js";

type NodeServerRequest = http.IncomingMessage | http2.Http2ServerRequest;
type NodeServerResponse = http.ServerResponse | http2.Http2ServerResponse;

/** What an authentication check sees of a call: its names and headers, never its body. */
export interface AuthenticationRequest {
  /** Fully qualified service name, e.g. `holdfast.v1.LedgerService`. */
  readonly service: string;
  /** Method name, e.g. `GetWallet`. */
  readonly method: string;
  readonly header: Headers;
  /**
   * The call's context values: what the check learns (the caller's principal) can be stored
   * here for the interceptors and handlers, so they need not check again.
   */
  readonly contextValues: ContextValues;
}

/**
 * Checks a call's credentials from its headers; resolves to admit it, throws to refuse it. A
 * thrown ConnectError is sent as is (so the same code, reason and detail as the interceptor
 * that checks again later); anything else is logged and sent as INTERNAL.
 */
export type Authenticate = (request: AuthenticationRequest) => Promise<void>;

/** Options of {@link createRpcAdapter}. */
export interface RpcAdapterOptions extends ConnectRouterOptions {
  readonly routes: (router: ConnectRouter) => void;
  readonly authenticate: Authenticate | undefined;
  readonly connectionBodyBytesMax: number;
  readonly logger: Logger;
}

/** Creates the listener; requests for unknown paths get 404, as with connect-node's adapter. */
export function createRpcAdapter(options: RpcAdapterOptions): (req: NodeServerRequest, res: NodeServerResponse) => void {
  const router = createConnectRouter(options);
  options.routes(router);
  const handlers = new Map(router.handlers.map((handler) => [handler.requestPath, handler]));
  const connections = new WeakMap<object, ConnectionState>();
  return (req, res) => {
    const handler = handlers.get((req.url ?? "").split("?", 1)[0] ?? "");
    if (handler === undefined) {
      res.writeHead(404);
      res.end();
      return;
    }
    const connection = connectionOf(req, connections);
    serveCall(handler, req, res, connection, options).catch((err: unknown) => {
      if (ConnectError.from(err).code !== Code.Aborted) {
        options.logger.debug({ err, method: handler.method.name }, "call ended with a transport error");
      }
    });
  };
}

async function serveCall(
  handler: UniversalHandler,
  req: NodeServerRequest,
  res: NodeServerResponse,
  connection: ConnectionState,
  options: RpcAdapterOptions,
): Promise<void> {
  const values = createContextValues().set(CONNECTION_KEY, connection);
  let call: UniversalServerRequest;
  try {
    call = universalRequestFromNodeRequest(req, res, undefined, values);
  } catch {
    // Only a request without an authority (no :authority, no Host) gets here.
    res.writeHead(400);
    res.end();
    return;
  }
  const refusal = await authenticateCall(handler, call, values, options);
  const admitted: UniversalServerRequest = refusal === undefined
    ? { ...call, body: countBody(call, connection, options.connectionBodyBytesMax) }
    : { ...call, header: withoutContentLength(call.header), body: failingBody(refusal) };
  let response = await handler(admitted);
  if (handler.method.methodKind === "unary") {
    response = await refuseMalformedBody(response, handler.method.input.typeName);
  }
  if (req.httpVersionMajor === 1 && !req.complete) {
    // The rest of an unread HTTP/1.1 body would otherwise be read (and dropped) to keep the
    // connection; closing it is cheaper and ends the caller's upload at once.
    response = { ...response, header: withHeader(response.header, "connection", "close") };
  }
  if ("stream" in req) {
    const stream = req.stream;
    // Node's response submits its trailers from its own 'wantTrailers' listener, which runs
    // before this one, in a setImmediate; a reset queued after it does not overtake them.
    stream.once("wantTrailers", () => {
      setImmediate(() => {
        if (!req.complete && !stream.closed) {
          // The answer is complete without the rest of the body: ask the client to stop
          // sending it (RFC 9113, section 8.1: RST_STREAM with NO_ERROR).
          stream.close(http2.constants.NGHTTP2_NO_ERROR);
        }
      });
    });
  }
  // This promise settles on a write error only: it waits for an 'end' event that Node's
  // responses do not emit once they finish.
  await universalResponseToNodeResponse(response, res);
}

/** The refusal of a call that fails authentication, or undefined to admit it. */
async function authenticateCall(
  handler: UniversalHandler,
  call: UniversalServerRequest,
  contextValues: ContextValues,
  options: RpcAdapterOptions,
): Promise<ConnectError | undefined> {
  if (options.authenticate === undefined || handler.service.typeName === HEALTH_SERVICE_NAME) {
    return undefined;
  }
  try {
    const request = { service: handler.service.typeName, method: handler.method.name, header: call.header, contextValues };
    await options.authenticate(request);
    return undefined;
  } catch (err) {
    if (err instanceof ConnectError) {
      return err;
    }
    options.logger.error({ err }, "authentication failed");
    return ledgerError(Code.Internal, "INTERNAL", "internal error");
  }
}

/** One state per HTTP/2 session or HTTP/1.1 socket, kept as long as the connection lives. */
function connectionOf(req: NodeServerRequest, connections: WeakMap<object, ConnectionState>): ConnectionState {
  const owner: object = "stream" in req ? req.stream.session ?? req.socket : req.socket;
  let state = connections.get(owner);
  if (state === undefined) {
    state = { healthWatchers: 0, bodyBytes: 0 };
    connections.set(owner, state);
  }
  return state;
}

/**
 * The call's body, counted against its connection's cap while the call reads it; the count is
 * given back when the body has been read or the request closes. A plain iterator rather than an
 * async generator, since it wraps every call's body (docs/performance.md, "The request path").
 */
function countBody(call: UniversalServerRequest, connection: ConnectionState, bytesMax: number): UniversalServerRequest["body"] {
  const body = call.body;
  if (typeof body !== "object" || body === null || !(Symbol.asyncIterator in body)) {
    return body;
  }
  let counted = 0;
  const release = (): void => {
    connection.bodyBytes -= counted;
    counted = 0;
  };
  onAbort(call.signal, release);
  const chunks = body as AsyncIterable<Uint8Array>;
  return {
    [Symbol.asyncIterator]: (): AsyncIterator<Uint8Array> => {
      const it = chunks[Symbol.asyncIterator]();
      const stop = async (): Promise<void> => {
        release();
        await it.return?.();
      };
      return {
        next: async () => {
          let result: IteratorResult<Uint8Array>;
          try {
            result = await it.next();
          } catch (err) {
            release();
            throw err;
          }
          if (result.done === true) {
            release();
            return result;
          }
          const chunk = result.value;
          if (connection.bodyBytes + chunk.byteLength > bytesMax) {
            await stop();
            throw ledgerError(Code.ResourceExhausted, "OVERLOADED", "too many request bytes in flight on this connection; retry", {
              metadata: { connection_body_bytes_max: String(bytesMax) },
            });
          }
          connection.bodyBytes += chunk.byteLength;
          counted += chunk.byteLength;
          return result;
        },
        return: async (value?: unknown) => {
          await stop();
          return { done: true, value: value as undefined };
        },
      };
    },
  };
}

/** A body that fails with the refusal as soon as Connect starts to read it. */
function failingBody(refusal: ConnectError): AsyncIterable<Uint8Array> {
  return {
    [Symbol.asyncIterator]: () => ({ next: () => Promise.reject(refusal) }),
  };
}

/**
 * Connect compares a declared content-length with the read limit before it reads; without it,
 * a refused call gets its refusal whatever size it declares.
 */
function withoutContentLength(header: Headers): Headers {
  const copy = new Headers(header);
  copy.delete("content-length");
  return copy;
}

function withHeader(header: Headers | undefined, name: string, value: string): Headers {
  const copy = new Headers(header);
  copy.set(name, value);
  return copy;
}
