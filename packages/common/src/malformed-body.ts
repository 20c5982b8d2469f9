/**
 * A request body that is not a valid protobuf message is the caller's mistake, so it is
 * answered INVALID_ARGUMENT, never INTERNAL.
 *
 * connect-es raises INTERNAL ("parse binary: ...") when a binary request message does not parse
 * (a JSON one already gets INVALID_ARGUMENT). For streams the parse happens inside the
 * interceptors, where {@link malformedBodyInterceptor} replaces the error. For unary calls it
 * happens before any interceptor runs, so {@link refuseMalformedBody} rewrites the finished
 * response instead, in the encoding of its protocol: a Connect JSON error body, gRPC trailers,
 * or a gRPC-Web trailer frame.
 *
 * @module
 */
import { Code, ConnectError, type Interceptor, type StreamRequest, type StreamResponse, type UnaryResponse } from "@connectrpc/connect";
import {
  createAsyncIterable,
  encodeEnvelope,
  type UniversalServerResponse,
} from "@connectrpc/connect/protocol";
import { codeToHttpStatus, errorFromJsonBytes, errorToJsonBytes } from "@connectrpc/connect/protocol-connect";
import { setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { trailerFlag, trailerParse, trailerSerialize } from "@connectrpc/connect/protocol-grpc-web";

import { ledgerError } from "./errors.js";

/** The message prefix connect-es gives a binary request that does not parse. */
const PARSE_ERROR_PREFIX = "parse binary: ";
/** A Connect error body is a few hundred bytes; a larger one is not the parse error. */
const ERROR_BODY_BYTES_MAX = 16 * 1024;
const ENVELOPE_HEADER_BYTES = 5;
const GRPC_STATUS_INTERNAL = String(Code.Internal);
const GRPC_TRAILERS = ["grpc-status", "grpc-message", "grpc-status-details-bin"];

/** The error a malformed body gets: INVALID_ARGUMENT, reason INVALID_FIELD, no field named. */
export function malformedBodyError(typeName: string): ConnectError {
  return ledgerError(Code.InvalidArgument, "INVALID_FIELD", `request body is not a valid ${typeName} message`);
}

/** True for the INTERNAL error connect-es raises for an unparsable binary request message. */
export function isParseError(code: Code, rawMessage: string): boolean {
  return code === Code.Internal && rawMessage.startsWith(PARSE_ERROR_PREFIX);
}

/**
 * Replaces the parse error of a streaming call's request message with INVALID_ARGUMENT. A unary
 * call passes straight through: its message was parsed before the interceptors ran, so no parse
 * error can come from inside them (its response is rewritten by {@link refuseMalformedBody}).
 */
export const malformedBodyInterceptor: Interceptor = (next) => (req) => (req.stream ? guardStream(next, req) : next(req));

async function guardStream(next: Parameters<Interceptor>[0], req: StreamRequest): Promise<StreamResponse | UnaryResponse> {
  try {
    return await next(req);
  } catch (err) {
    if (err instanceof ConnectError && isParseError(err.code, err.rawMessage)) {
      throw malformedBodyError(req.method.input.typeName);
    }
    throw err;
  }
}

/**
 * Returns the unary response with a parse error replaced by {@link malformedBodyError}, in the
 * response's own protocol; any other response is returned unchanged.
 */
export async function refuseMalformedBody(res: UniversalServerResponse, typeName: string): Promise<UniversalServerResponse> {
  const contentType = res.header?.get("content-type") ?? "";
  if (res.body === undefined) {
    return res;
  }
  if (contentType.startsWith("application/grpc-web")) {
    return { ...res, body: rewriteGrpcWebTrailer(res.body, typeName) };
  }
  if (contentType.startsWith("application/grpc") && res.trailer !== undefined) {
    return { ...res, body: rewriteGrpcTrailer(res.body, res.trailer, typeName) };
  }
  if (contentType.startsWith("application/json") && res.status === codeToHttpStatus(Code.Internal)) {
    return rewriteConnectError(res, res.body, typeName);
  }
  return res;
}

/** A Connect unary error is one small JSON body; it is read whole, checked and maybe replaced. */
async function rewriteConnectError(
  res: UniversalServerResponse,
  body: AsyncIterable<Uint8Array>,
  typeName: string,
): Promise<UniversalServerResponse> {
  const chunks: Uint8Array[] = [];
  let length = 0;
  for await (const chunk of body) {
    chunks.push(chunk);
    length += chunk.byteLength;
  }
  const bytes = Buffer.concat(chunks, length);
  const compressed = res.header?.has("content-encoding") ?? false;
  const error = compressed || length > ERROR_BODY_BYTES_MAX
    ? undefined
    : errorFromJsonBytes(bytes, undefined, new ConnectError("", Code.Unknown));
  if (error === undefined || !isParseError(error.code, error.rawMessage)) {
    return { ...res, body: createAsyncIterable([bytes]) };
  }
  const replaced = errorToJsonBytes(malformedBodyError(typeName), {});
  const header = new Headers(res.header);
  header.set("content-length", String(replaced.byteLength));
  return { ...res, status: codeToHttpStatus(Code.InvalidArgument), header, body: createAsyncIterable([replaced]) };
}

/**
 * Passes the gRPC body through, then fixes the trailers before the adapter sends them. A plain
 * iterator rather than an async generator: it runs on every gRPC call, and a generator costs a
 * promise and a queue entry per chunk on top of the body's own.
 */
function rewriteGrpcTrailer(
  body: AsyncIterable<Uint8Array>,
  trailer: Headers,
  typeName: string,
): AsyncIterable<Uint8Array> {
  const fixTrailer = (): void => {
    if (isParseErrorTrailer(trailer)) {
      for (const name of GRPC_TRAILERS) {
        trailer.delete(name);
      }
      setTrailerStatus(trailer, malformedBodyError(typeName));
    }
  };
  return {
    [Symbol.asyncIterator]: () => {
      const it = body[Symbol.asyncIterator]();
      return {
        next: async () => {
          const result = await it.next();
          if (result.done === true) {
            fixTrailer();
          }
          return result;
        },
        return: async (value?: unknown) => (await it.return?.(value)) ?? { done: true, value: undefined },
        throw: async (err?: unknown) => {
          if (it.throw === undefined) {
            throw err;
          }
          return it.throw(err);
        },
      };
    },
  };
}

/** Passes the gRPC-Web frames through, replacing a trailer frame that carries the parse error. */
async function* rewriteGrpcWebTrailer(body: AsyncIterable<Uint8Array>, typeName: string): AsyncGenerator<Uint8Array> {
  for await (const chunk of body) {
    // Every chunk is one whole frame (connect-es joins envelopes one by one); a compressed
    // trailer frame would carry the compressed flag too and is left alone.
    if (chunk.byteLength > ENVELOPE_HEADER_BYTES && chunk[0] === trailerFlag) {
      const trailer = trailerParse(chunk.subarray(ENVELOPE_HEADER_BYTES));
      if (isParseErrorTrailer(trailer)) {
        const replaced = setTrailerStatus(new Headers(), malformedBodyError(typeName));
        yield encodeEnvelope(trailerFlag, trailerSerialize(replaced));
        continue;
      }
    }
    yield chunk;
  }
}

function isParseErrorTrailer(trailer: Headers): boolean {
  if (trailer.get("grpc-status") !== GRPC_STATUS_INTERNAL) {
    return false;
  }
  const message = trailer.get("grpc-message") ?? "";
  try {
    return isParseError(Code.Internal, decodeURIComponent(message));
  } catch {
    return false;
  }
}
