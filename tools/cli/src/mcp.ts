/**
 * `holdfast mcp`: a Model Context Protocol server over stdio, so that an AI agent or a coding
 * assistant can use a Holdfast wallet with the key it is given (docs/mcp.md). Each tool is one
 * call of @holdfast/client: the ledger validates the arguments and answers exactly as it answers
 * any client, a refusal comes back as a tool error carrying the API's code, reason, field and
 * metadata, and the server keeps no state of its own (lists page with the API's page tokens).
 *
 * Write tools (reserve, capture, release, spend) are listed for every key, and a reader key
 * calling one gets the API's PERMISSION_DENIED as a tool error: the key's role lives in the
 * ledger, which no call reveals in advance. `--read-only` leaves them out of the list for an
 * agent that should not even try.
 *
 * @module
 */
import { Command, Option } from "commander";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { toJson, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { z } from "zod";
import { Code, HoldStatus, Holdfast, HoldfastError } from "@holdfast/client";
import {
  CaptureResponseSchema,
  ListHoldsResponseSchema,
  ListTransfersResponseSchema,
  QuoteUsageResponseSchema,
  ReleaseResponseSchema,
  ReserveResponseSchema,
  SpendResponseSchema,
  WalletSchema,
} from "@holdfast/client/proto";
import type { CliOutput } from "./main.js";

/** The ledger `npm start` runs, where `holdfast mcp` looks unless told otherwise. */
export const MCP_URL_DEFAULT = "http://127.0.0.1:8080";

/** The server's name and version in the MCP handshake. */
const SERVER_INFO = { name: "holdfast", version: "0.1.0" };

const UINT32_MAX = 4_294_967_295;

// Argument shapes. Types are checked here only as far as the wire needs them (an int64 amount,
// a uint32 TTL); every limit of the API (positive amounts, id patterns, TTL 1-604800, ...) is the
// ledger's to check, so a tool answers the same INVALID_FIELD any client gets.
const walletId = z.string().describe("The wallet id, e.g. user_123 (1-128 of A-Za-z0-9_:-).");
const holdId = z.string().describe("The hold id Reserve answered.");
const asset = z.string().describe('The asset code, e.g. "USD" (amounts are in its minor units: cents) or "TOKENS".');
const amount = z
  .union([z.string().regex(/^-?[0-9]+$/), z.number().int()])
  .describe('An amount in minor units of the asset (cents for USD): a positive integer, as a number or a decimal string ("500").');
const idempotencyKey = z
  .string()
  .optional()
  .describe("Makes the command safe to repeat: the same key with the same arguments answers the first result (replayed = true) instead of applying twice. Pass one and reuse it when you retry; one is generated when absent.");
const metadata = z.record(z.string(), z.string()).optional().describe("Your notes on the journal row, e.g. {\"model\": \"gpt-4.1\"} (at most 32 entries).");
const categories = z.array(z.string()).optional().describe("Draw only on grants of these categories (and then the credit line); absent: every grant.");
const pageSize = z.number().int().min(0).max(UINT32_MAX).optional().describe("Items per page, 1-500; default 50.");
const pageToken = z.string().optional().describe("next_page_token of the previous page; absent for the first page.");
const tokens = z.number().int().min(0).optional();

const HOLD_STATUSES = { pending: HoldStatus.PENDING, captured: HoldStatus.CAPTURED, released: HoldStatus.RELEASED, expired: HoldStatus.EXPIRED } as const;

/** A tool's answer: the API's response as its JSON (int64 as strings, zero values included). */
function answer<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>): CallToolResult {
  const json = toJson(schema, message, { alwaysEmitImplicit: true });
  return { content: [{ type: "text", text: JSON.stringify(json, null, 2) }], structuredContent: json as Record<string, unknown> };
}

/**
 * A refusal or failure as a tool error: the code as Connect spells it ("failed_precondition"),
 * and the ErrorDetail's reason, field, message and metadata, so the agent can act on it.
 */
function toolError(error: unknown): CallToolResult {
  const e = HoldfastError.from(error);
  const code = (Code[e.code] ?? "Unknown").replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();
  const detail = { code, reason: e.reason, message: e.message, field: e.field, metadata: e.metadata };
  return { isError: true, content: [{ type: "text", text: JSON.stringify({ error: detail }, null, 2) }] };
}

/** Runs one tool call; any error becomes a tool error, never a protocol error. */
async function call(work: () => Promise<CallToolResult>): Promise<CallToolResult> {
  try {
    return await work();
  } catch (error) {
    return toolError(error);
  }
}

/** The MCP server for `hf`'s key: the read tools, and the write tools unless `readOnly`. */
export function createMcpServer(hf: Holdfast, options: { readOnly: boolean }): McpServer {
  const server = new McpServer(SERVER_INFO);
  const read = { readOnlyHint: true, openWorldHint: false };

  server.registerTool(
    "get_wallet",
    { description: "A wallet's status, metadata and balance in every asset: posted, held (by pending holds), available (what it may still spend), credit_limit, scheduled.", inputSchema: { wallet_id: walletId }, annotations: read },
    ({ wallet_id }) => call(async () => answer(WalletSchema, await hf.wallet(wallet_id).get())),
  );
  server.registerTool(
    "list_holds",
    {
      description: "One page of a wallet's holds (reservations), newest first, optionally of one status.",
      inputSchema: { wallet_id: walletId, status: z.enum(["pending", "captured", "released", "expired"]).optional(), page_size: pageSize, page_token: pageToken },
      annotations: read,
    },
    ({ wallet_id, status, page_size, page_token }) =>
      call(async () =>
        answer(
          ListHoldsResponseSchema,
          await hf.ledger.listHolds({ walletId: wallet_id, status: status === undefined ? undefined : HOLD_STATUSES[status], pageSize: page_size ?? 0, pageToken: page_token ?? "" }),
        ),
      ),
  );
  server.registerTool(
    "list_transfers",
    {
      description: "One page of a wallet's journal (deposits, spends, reserves, captures, releases, refunds...), newest first, optionally in one asset.",
      inputSchema: { wallet_id: walletId, asset: asset.optional(), page_size: pageSize, page_token: pageToken },
      annotations: read,
    },
    ({ wallet_id, asset, page_size, page_token }) =>
      call(async () =>
        answer(ListTransfersResponseSchema, await hf.ledger.listTransfers({ walletId: wallet_id, asset: asset ?? "", pageSize: page_size ?? 0, pageToken: page_token ?? "" })),
      ),
  );
  server.registerTool(
    "quote_usage",
    {
      description:
        "Prices a model usage with a rate card, exactly, charging nothing: per token class the tokens, price and cost, the total cost_nano (billionths of a minor unit), hold_amount (what a reserve for it should take) and charge_amount. Token counts never overlap: cached input tokens are not also input tokens.",
      inputSchema: {
        rate_card_id: z.string(),
        model: z.string().describe('The model as the rate card names it, e.g. "gpt-4.1-mini".'),
        usage: z.object({
          input_tokens: tokens,
          cached_input_tokens: tokens,
          cache_write_tokens: tokens,
          cache_write_1h_tokens: tokens,
          output_tokens: tokens,
          reasoning_tokens: tokens,
        }),
        version: z.number().int().min(0).max(UINT32_MAX).optional().describe("A rate card version; absent: the one in effect now."),
      },
      annotations: read,
    },
    ({ rate_card_id, model, usage, version }) =>
      call(async () => {
        const count = (n: number | undefined) => BigInt(n ?? 0);
        const response = await hf.rateCards.quoteUsage({
          rateCardId: rate_card_id,
          model,
          version: version ?? 0,
          usage: {
            inputTokens: count(usage.input_tokens),
            cachedInputTokens: count(usage.cached_input_tokens),
            cacheWriteTokens: count(usage.cache_write_tokens),
            cacheWrite1hTokens: count(usage.cache_write_1h_tokens),
            outputTokens: count(usage.output_tokens),
            reasoningTokens: count(usage.reasoning_tokens),
          },
        });
        return answer(QuoteUsageResponseSchema, response);
      }),
  );
  if (!options.readOnly) addWriteTools(server, hf);
  return server;
}

/** reserve, capture, release and spend: for writer keys (a reader key gets PERMISSION_DENIED). */
function addWriteTools(server: McpServer, hf: Holdfast): void {
  server.registerTool(
    "reserve",
    {
      description:
        "Reserves funds before expensive work (a hold): they stay in the wallet but cannot be spent until the hold is captured (charged), released, or expires after ttl_seconds. Refused with INSUFFICIENT_FUNDS (metadata.available says what the wallet has) when it cannot pay.",
      inputSchema: {
        wallet_id: walletId,
        asset,
        amount,
        hold_id: z.string().optional().describe("Your id for the hold; generated when absent."),
        ttl_seconds: z.number().int().min(0).max(UINT32_MAX).optional().describe("How long the hold blocks funds, 1-604800 seconds; default 300."),
        metadata,
        categories,
        idempotency_key: idempotencyKey,
      },
      annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: true, openWorldHint: false },
    },
    (a) =>
      call(async () =>
        answer(
          ReserveResponseSchema,
          await hf.wallet(a.wallet_id).reserve({
            asset: a.asset,
            amount: a.amount,
            holdId: a.hold_id,
            ttlSeconds: a.ttl_seconds,
            metadata: a.metadata,
            categories: a.categories,
            idempotencyKey: a.idempotency_key,
          }),
        ),
      ),
  );
  server.registerTool(
    "capture",
    {
      description:
        "Charges a pending hold with what the work really cost: the whole hold when amount is absent; below the hold the rest goes back to the wallet; above it the excess must be available. Refused with HOLD_EXPIRED after its TTL.",
      inputSchema: { hold_id: holdId, amount: amount.optional(), metadata, idempotency_key: idempotencyKey },
      annotations: { readOnlyHint: false, destructiveHint: true, idempotentHint: true, openWorldHint: false },
    },
    (a) =>
      call(async () =>
        answer(CaptureResponseSchema, await hf.hold(a.hold_id).capture({ amount: a.amount, metadata: a.metadata, idempotencyKey: a.idempotency_key })),
      ),
  );
  server.registerTool(
    "release",
    {
      description: "Releases a pending hold: all its funds go back to the wallet, nothing is charged.",
      inputSchema: { hold_id: holdId, idempotency_key: idempotencyKey },
      annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: true, openWorldHint: false },
    },
    (a) => call(async () => answer(ReleaseResponseSchema, await hf.hold(a.hold_id).release({ idempotencyKey: a.idempotency_key }))),
  );
  server.registerTool(
    "spend",
    {
      description: "Charges the wallet directly, for a cost known up front. Refused with INSUFFICIENT_FUNDS (metadata.available) when it cannot pay.",
      inputSchema: { wallet_id: walletId, asset, amount, metadata, categories, idempotency_key: idempotencyKey },
      annotations: { readOnlyHint: false, destructiveHint: true, idempotentHint: true, openWorldHint: false },
    },
    (a) =>
      call(async () =>
        answer(
          SpendResponseSchema,
          await hf.wallet(a.wallet_id).spend({ asset: a.asset, amount: a.amount, metadata: a.metadata, categories: a.categories, idempotencyKey: a.idempotency_key }),
        ),
      ),
  );
}

/**
 * Adds `holdfast mcp`: serves the tools on stdin/stdout until stdin ends. stdout belongs to the
 * protocol, so the command writes nothing else there; errors go to stderr.
 */
export function addMcpCommand(program: Command, output: CliOutput): void {
  program
    .command("mcp")
    .description("serve a wallet's tools to an AI agent over the Model Context Protocol (stdio); the key from HOLDFAST_API_KEY")
    .addOption(new Option("--url <url>", "the ledger's URL").env("HOLDFAST_URL").default(MCP_URL_DEFAULT))
    .option("--read-only", "list only the read tools (get_wallet, list_holds, list_transfers, quote_usage)", false)
    .action(async (options: { url: string; readOnly: boolean }) => {
      const apiKey = process.env["HOLDFAST_API_KEY"]?.trim();
      if (apiKey === undefined || apiKey === "") throw new Error("set HOLDFAST_API_KEY to the API key the agent may use (a reader key, or a writer key for the write tools)");
      const hf = new Holdfast({ baseUrl: options.url, apiKey });
      const server = createMcpServer(hf, { readOnly: options.readOnly });
      const transport = new StdioServerTransport();
      const closed = new Promise<void>((resolve) => {
        transport.onclose = resolve;
      });
      await server.connect(transport);
      output.err(`holdfast mcp: serving ${options.url} on stdio${options.readOnly ? " (read-only)" : ""}`);
      process.stdin.once("end", () => void server.close());
      await closed;
      hf.close();
    });
}
