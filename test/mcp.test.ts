// Goal: `holdfast mcp` is the MCP server docs/mcp.md describes: over stdio it lists get_wallet,
// list_holds, list_transfers, quote_usage and the write tools reserve, capture, release, spend,
// each with a JSON schema; each tool answers what its RPC answers (as the API's JSON); a
// refusal comes back as a tool error with the API's code, reason, field and metadata; a reader
// key's write calls are refused by the ledger (PERMISSION_DENIED) and change nothing, and
// --read-only does not list them at all.
// Method: a real ledger server on port 0 over a fresh database; the CLI runs from source (tsx)
// as a child process, driven by the MCP SDK's own client over stdio, one process per key; the
// wallet is funded and checked with @holdfast/client. The file ends by checking every ledger
// invariant.
import { randomUUID } from "node:crypto";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Holdfast } from "@holdfast/client";
import { checkInvariants } from "@holdfast/ledger/invariants";
import { startTestServer } from "./support/server.js";

let s: Awaited<ReturnType<typeof startTestServer>>;
let hf: Holdfast;
const sessions: Client[] = [];

beforeAll(async () => {
  s = await startTestServer();
  hf = new Holdfast({ baseUrl: s.app.url, apiKey: s.keys.admin, asset: "USD" });
});
afterAll(async () => {
  for (const session of sessions) await session.close();
  hf?.close();
  await s?.close();
});

/** Starts `holdfast mcp` from source with `apiKey` and connects the SDK's client to it. */
async function connect(apiKey: string, args: string[] = []): Promise<Client> {
  const runner = 'const { main } = await import("./tools/cli/src/main.ts"); process.exitCode = await main(["node", "holdfast", ...process.argv.slice(1)]);';
  const transport = new StdioClientTransport({
    command: process.execPath,
    args: ["--conditions=source", "--import", "tsx", "--input-type=module", "-e", runner, "mcp", ...args],
    env: { PATH: process.env["PATH"] ?? "", HOLDFAST_API_KEY: apiKey, HOLDFAST_URL: s.app.url },
    cwd: process.cwd(),
    stderr: "pipe",
  });
  const client = new Client({ name: "holdfast-test", version: "0.0.0" });
  await client.connect(transport);
  sessions.push(client);
  return client;
}

interface ToolAnswer {
  readonly isError?: boolean;
  readonly content: { type: string; text: string }[];
}

/** Calls a tool; returns whether it is an error and its JSON. */
async function callTool(client: Client, name: string, args: Record<string, unknown>): Promise<{ isError: boolean; json: Record<string, any> }> {
  const result = (await client.callTool({ name, arguments: args })) as ToolAnswer;
  const text = result.content[0]!.text;
  let json: Record<string, any>;
  try {
    json = JSON.parse(text) as Record<string, any>;
  } catch {
    json = { text };
  }
  return { isError: result.isError === true, json };
}

let n = 0;
const walletId = () => `mcp_w${++n}`;

describe("holdfast mcp with a writer key", () => {
  let writer: Client;
  beforeAll(async () => {
    writer = await connect(s.keys.writer);
  }, 60_000);

  it("lists the eight tools, each with a JSON schema of its arguments", async () => {
    const { tools } = await writer.listTools();
    expect(tools.map((t) => t.name).sort()).toEqual(["capture", "get_wallet", "list_holds", "list_transfers", "quote_usage", "release", "reserve", "spend"]);
    const reserve = tools.find((t) => t.name === "reserve")!;
    expect(reserve.inputSchema).toMatchObject({ type: "object", properties: { wallet_id: { type: "string" }, asset: { type: "string" } } });
    expect(reserve.inputSchema.required?.sort()).toEqual(["amount", "asset", "wallet_id"]);
    expect(tools.find((t) => t.name === "get_wallet")!.annotations).toMatchObject({ readOnlyHint: true });
  });

  it("reserves, captures, releases and spends, and reads the wallet, its holds and its transfers", async () => {
    const wallet = walletId();
    await hf.wallet(wallet).deposit({ amount: 1000n });

    const reserved = await callTool(writer, "reserve", { wallet_id: wallet, asset: "USD", amount: 500, ttl_seconds: 60, metadata: { model: "gpt-4.1" } });
    expect(reserved.isError).toBe(false);
    expect(reserved.json).toMatchObject({ hold: { amount: "500", status: "HOLD_STATUS_PENDING", metadata: { model: "gpt-4.1" } }, balance: { held: "500", available: "500" } });
    const holdId = reserved.json["hold"].holdId as string;

    const got = await callTool(writer, "get_wallet", { wallet_id: wallet });
    expect(got.json).toMatchObject({ walletId: wallet, balances: [{ asset: "USD", posted: "1000", held: "500", available: "500" }] });
    const holds = await callTool(writer, "list_holds", { wallet_id: wallet, status: "pending" });
    expect(holds.json).toMatchObject({ holds: [{ holdId }], nextPageToken: "" });

    const captured = await callTool(writer, "capture", { hold_id: holdId, amount: "123" });
    expect(captured.json).toMatchObject({ hold: { status: "HOLD_STATUS_CAPTURED", capturedAmount: "123" }, balance: { posted: "877", held: "0" } });

    const second = await callTool(writer, "reserve", { wallet_id: wallet, asset: "USD", amount: 100 });
    const released = await callTool(writer, "release", { hold_id: second.json["hold"].holdId });
    expect(released.json).toMatchObject({ hold: { status: "HOLD_STATUS_RELEASED" }, balance: { available: "877" } });

    const spent = await callTool(writer, "spend", { wallet_id: wallet, asset: "USD", amount: 77 });
    expect(spent.json).toMatchObject({ transfer: { kind: "TRANSFER_KIND_SPEND", amount: "77" }, balance: { available: "800" } });

    // Two pages through the tool hold what the API lists, in its order.
    const page = await callTool(writer, "list_transfers", { wallet_id: wallet, page_size: 3 });
    expect(page.json["transfers"]).toHaveLength(3);
    const rest = await callTool(writer, "list_transfers", { wallet_id: wallet, page_token: page.json["nextPageToken"] });
    const viaTool = [...page.json["transfers"], ...rest.json["transfers"]].map((t: { transferId: string }) => t.transferId);
    const viaApi = [];
    for await (const t of hf.wallet(wallet).transfers()) viaApi.push(t.transferId);
    expect(viaTool).toEqual(viaApi);
    expect(viaApi.length).toBeGreaterThan(3);
    expect((await hf.wallet(wallet).get()).balances[0]).toMatchObject({ posted: 800n, held: 0n, available: 800n });
  });

  it("replays a command repeated with its idempotency key", async () => {
    const wallet = walletId();
    await hf.wallet(wallet).deposit({ amount: 100n });
    const idempotency_key = `k-${randomUUID()}`;
    const first = await callTool(writer, "spend", { wallet_id: wallet, asset: "USD", amount: 40, idempotency_key });
    const again = await callTool(writer, "spend", { wallet_id: wallet, asset: "USD", amount: 40, idempotency_key });
    expect(again.json).toMatchObject({ replayed: true, transfer: { transferId: first.json["transfer"].transferId }, balance: { available: "60" } });
  });

  it("quotes a usage with a rate card", async () => {
    const rateCardId = `card_${randomUUID().slice(0, 8)}`;
    await hf.rateCards.putRateCard({ rateCardId, asset: "USD", models: [{ model: "gpt-4.1-mini", inputNanoPerMtok: 4_000_000_000n, outputNanoPerMtok: 16_000_000_000n }] });
    const quote = await callTool(writer, "quote_usage", { rate_card_id: rateCardId, model: "gpt-4.1-mini", usage: { input_tokens: 1_000_000, output_tokens: 500_000 } });
    expect(quote.isError).toBe(false);
    expect(quote.json["quote"]).toMatchObject({ costNano: "12000000000", holdAmount: "12", chargeAmount: "12" });
  });

  it("answers refusals and bad arguments as tool errors with the API's code, reason, field and metadata", async () => {
    const wallet = walletId();
    await hf.wallet(wallet).deposit({ amount: 100n });
    const poor = await callTool(writer, "spend", { wallet_id: wallet, asset: "USD", amount: 5000 });
    expect(poor).toMatchObject({ isError: true, json: { error: { code: "failed_precondition", reason: "INSUFFICIENT_FUNDS", metadata: { available: "100" } } } });
    const zero = await callTool(writer, "reserve", { wallet_id: wallet, asset: "USD", amount: "0" });
    expect(zero).toMatchObject({ isError: true, json: { error: { code: "invalid_argument", reason: "INVALID_FIELD", field: "amount" } } });
    const badWallet = await callTool(writer, "get_wallet", { wallet_id: "no spaces allowed" });
    expect(badWallet).toMatchObject({ isError: true, json: { error: { reason: "INVALID_FIELD", field: "wallet_id" } } });
    const missing = await callTool(writer, "capture", { hold_id: "no_such_hold" });
    expect(missing).toMatchObject({ isError: true, json: { error: { code: "not_found", reason: "HOLD_NOT_FOUND" } } });
    const notAnAmount = await callTool(writer, "spend", { wallet_id: wallet, asset: "USD", amount: "a lot" });
    expect(notAnAmount.isError).toBe(true);
    expect(notAnAmount.json["text"]).toMatch(/amount/);
    expect((await hf.wallet(wallet).get()).balances[0]).toMatchObject({ posted: 100n, available: 100n });
  });
});

describe("holdfast mcp with a reader key", () => {
  it("lists the write tools, and the ledger refuses them with PERMISSION_DENIED, applying nothing", async () => {
    const reader = await connect(s.keys.reader);
    const wallet = walletId();
    await hf.wallet(wallet).deposit({ amount: 300n });
    expect((await reader.listTools()).tools).toHaveLength(8);
    for (const [tool, args] of [
      ["reserve", { wallet_id: wallet, asset: "USD", amount: 10 }],
      ["spend", { wallet_id: wallet, asset: "USD", amount: 10 }],
    ] as const) {
      const refused = await callTool(reader, tool, args);
      expect(refused, tool).toMatchObject({ isError: true, json: { error: { code: "permission_denied", reason: "PERMISSION_DENIED" } } });
    }
    const { hold } = await hf.wallet(wallet).reserve({ amount: 50n });
    for (const tool of ["capture", "release"]) {
      const refused = await callTool(reader, tool, { hold_id: hold!.holdId });
      expect(refused, tool).toMatchObject({ isError: true, json: { error: { reason: "PERMISSION_DENIED" } } });
    }
    expect((await callTool(reader, "get_wallet", { wallet_id: wallet })).json).toMatchObject({ balances: [{ posted: "300", held: "50", available: "250" }] });
  }, 60_000);

  it("with --read-only, does not list the write tools and refuses a call of one", async () => {
    const reader = await connect(s.keys.reader, ["--read-only"]);
    expect((await reader.listTools()).tools.map((t) => t.name).sort()).toEqual(["get_wallet", "list_holds", "list_transfers", "quote_usage"]);
    const unknown = await reader.callTool({ name: "spend", arguments: { wallet_id: "w", asset: "USD", amount: 1 } }).then(
      (result) => result as ToolAnswer,
      (error: Error) => ({ isError: true, content: [{ type: "text", text: error.message }] }),
    );
    expect(unknown.isError).toBe(true);
    expect(unknown.content[0]!.text).toMatch(/spend/);
  }, 60_000);
});

describe("the ledger after the MCP calls", () => {
  it("keeps every invariant", async () => {
    expect(await checkInvariants(s.app.pool)).toEqual([]);
  });
});
