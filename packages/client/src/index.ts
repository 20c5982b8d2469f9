/**
 * @holdfast/client: the Holdfast wallet ledger from Node and browsers (docs/sdk.md).
 *
 * ```ts
 * const hf = new Holdfast({ baseUrl: "http://127.0.0.1:8080", asset: "USD" }); // key: HOLDFAST_API_KEY
 * const { hold } = await hf.wallet("user_123").reserve({ amount: 500n, ttlSeconds: 45 });
 * await hf.hold(hold!.holdId).capture({ amount: 123n });
 * ```
 *
 * @module
 */
export {
  Holdfast,
  WalletHandle,
  HoldHandle,
  GrantHandle,
  WATCH_RECONNECTS_MAX,
  type HoldfastOptions,
  type ReserveInput,
  type SpendInput,
  type DepositInput,
  type TransferInput,
  type CreateGrantInput,
  type CaptureInput,
  type RefundInput,
  type ListOptions,
  type TokenUsageInput,
  type ReserveUsageInput,
  type CaptureUsageInput,
  type SpendUsageInput,
} from "./holdfast.js";
export { pages, type Page, type Pages } from "./pages.js";
export { toInt64, type Amount } from "./amounts.js";
export {
  newIdempotencyKey,
  isTransient,
  RETRY_ATTEMPTS_DEFAULT,
  RETRY_ATTEMPTS_MAX,
  RETRY_DELAY_MS_INITIAL_DEFAULT,
  RETRY_DELAY_MS_MAX_DEFAULT,
  ATTEMPT_TIMEOUT_MS_DEFAULT,
  type HoldfastCallOptions,
  type RetryOptions,
  type RetryPolicy,
} from "./calls.js";
export type { Protocol } from "./transport-options.js";
export * from "./errors.js";
export {
  fromOpenAIUsage,
  fromAnthropicUsage,
  type OpenAIChatCompletionsUsage,
  type OpenAIResponsesUsage,
  type AnthropicUsage,
} from "./usage-adapters.js";
export { Code } from "@connectrpc/connect";
export { HoldStatus, TransferKind, WalletStatus, GrantStatus, type Balance, type Grant, type GrantAmount, type Hold, type Transfer, type Wallet } from "#gen/holdfast/v1/types_pb";
export { TokenClass, type TokenUsage, type Quote, type RateCard, type ModelPrice } from "#gen/holdfast/v1/rate_cards_pb";
export { Role, type ApiKey } from "#gen/holdfast/v1/admin_pb";
export { LedgerService, type WatchWalletResponse } from "#gen/holdfast/v1/ledger_pb";
