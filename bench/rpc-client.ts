// The load generator's LedgerService clients, both over gRPC on HTTP/2 cleartext, each spreading
// its calls round-robin over several HTTP/2 connections (CONNECTIONS_PER_CLIENT); and the one
// AdminService call of the orchestrator's setup (putTenantAlert).
import grpc from "@grpc/grpc-js";
import { create, fromBinary, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { AdminService } from "@holdfast/gen/holdfast/v1/admin_pb";
import { LedgerService } from "@holdfast/gen/holdfast/v1/ledger_pb";

/** The commands the workloads send. */
export type Method = "deposit" | "reserve" | "capture" | "spend" | "reserveUsage" | "captureUsage" | "transfer";

/** One unary call; rejects with an error carrying the gRPC status `code`. */
export type Call = (method: Method, request: Record<string, unknown>) => Promise<unknown>;

export interface Caller {
  call: Call;
  close(): void;
}

/** The client libraries the load generator can call with (`--client`). */
export const CLIENT_KINDS = ["grpc-js", "connect"] as const;
export type ClientKind = (typeof CLIENT_KINDS)[number];

/**
 * HTTP/2 connections per load generator. One connection serializes every frame through one
 * socket and one session object on both sides; four spread that work without opening so many
 * that the server spends its CPU on connection bookkeeping. The calls of one connection are
 * multiplexed, so 256 concurrent calls over 4 connections is 64 streams each, well inside the
 * default limit of 100 concurrent streams per connection of both Node and grpc-js.
 */
export const CONNECTIONS_PER_CLIENT = 4;

export function createLedgerCaller(kind: ClientKind, target: string, apiKey: string | null): Caller {
  return kind === "connect" ? createConnectCaller(target, apiKey) : createGrpcJsCaller(target, apiKey);
}

/**
 * @connectrpc/connect's createClient over createGrpcTransport, one transport (hence one HTTP/2
 * session) per connection.
 */
function createConnectCaller(target: string, apiKey: string | null): Caller {
  const headers: Record<string, string> = apiKey === null ? {} : { authorization: `Bearer ${apiKey}` };
  const clients: Client<typeof LedgerService>[] = Array.from({ length: CONNECTIONS_PER_CLIENT }, () =>
    createClient(LedgerService, createGrpcTransport({ baseUrl: `http://${target}`, acceptCompression: [] })),
  );
  let next = 0;
  const call: Call = (method, request) => {
    const client = clients[next++ % CONNECTIONS_PER_CLIENT]!;
    const unary = client[method] as (req: Record<string, unknown>, options: { headers: Record<string, string> }) => Promise<unknown>;
    return unary(request, { headers });
  };
  // Connect's HTTP/2 sessions close themselves once idle; the process exits right after a run.
  return { call, close: () => undefined };
}

/**
 * @grpc/grpc-js, the client internal services use (docs/architecture.md, "Processes"), with protobuf-es
 * doing the encoding.
 */
function createGrpcJsCaller(target: string, apiKey: string | null): Caller {
  const Client = grpc.makeGenericClientConstructor(grpcDefinition(), "LedgerService");
  // Distinct channel options keep grpc-js from sharing one subchannel between the clients.
  const clients = Array.from(
    { length: CONNECTIONS_PER_CLIENT },
    (_, i) => new Client(target, grpc.credentials.createInsecure(), { "grpc.bench_channel": i }),
  );
  const metadata = new grpc.Metadata();
  if (apiKey !== null) metadata.set("authorization", `Bearer ${apiKey}`);
  type Unary = (req: unknown, md: grpc.Metadata, cb: (err: grpc.ServiceError | null, res: unknown) => void) => void;
  let next = 0;
  const call: Call = (method, request) =>
    new Promise((resolve, reject) => {
      const client = clients[next++ % CONNECTIONS_PER_CLIENT]!;
      const message = create(LedgerService.method[method].input as DescMessage, request);
      const unary = (client as unknown as Record<string, Unary>)[method]!.bind(client);
      unary(message, metadata, (err, res) => (err ? reject(err) : resolve(res)));
    });
  return { call, close: () => clients.forEach((c) => c.close()) };
}

/**
 * One tenant-wide balance alert (every wallet, `asset`, below `below`) for the admin key's
 * tenant, through AdminService.PutBalanceAlert as an operator would create it.
 */
export async function putTenantAlert(target: string, adminKey: string, asset: string, below: bigint): Promise<void> {
  const admin = createClient(AdminService, createGrpcTransport({ baseUrl: `http://${target}` }));
  await admin.putBalanceAlert({ alertId: "bench", walletId: "", asset, below, hysteresis: 0n }, { headers: { authorization: `Bearer ${adminKey}` } });
}

function grpcDefinition(): grpc.ServiceDefinition {
  const definition: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const method of LedgerService.methods) {
    if (method.methodKind !== "unary") continue;
    const input = method.input as DescMessage;
    const output = method.output as DescMessage;
    definition[method.localName] = {
      path: `/${LedgerService.typeName}/${method.name}`,
      requestStream: false,
      responseStream: false,
      requestSerialize: (m: unknown) => Buffer.from(toBinary(input, m as MessageShape<DescMessage>)),
      requestDeserialize: (b: Buffer) => fromBinary(input, b),
      responseSerialize: (m: unknown) => Buffer.from(toBinary(output, m as MessageShape<DescMessage>)),
      responseDeserialize: (b: Buffer) => fromBinary(output, b),
    };
  }
  return definition as grpc.ServiceDefinition;
}
