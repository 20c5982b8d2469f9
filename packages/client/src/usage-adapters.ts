/**
 * Provider usage objects to `TokenUsage`, whose classes never overlap (rate_cards.proto,
 * TokenUsage): OpenAI counts cached tokens inside the prompt and reasoning tokens inside the
 * completion, so they are subtracted out; Anthropic counts cache reads and writes outside
 * `input_tokens`, so they are taken as they are. The mapping is docs/metering.md, "Provider
 * mappings", exactly. Counts are checked (non-negative safe integers, details not above their
 * totals) so that a malformed object fails here, naming the provider's field, instead of
 * pricing wrong tokens.
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import { TokenUsageSchema, type TokenUsage } from "#gen/holdfast/v1/rate_cards_pb";

/** OpenAI Chat Completions `usage` (the fields this mapping reads). */
export interface OpenAIChatCompletionsUsage {
  readonly prompt_tokens: number;
  readonly completion_tokens: number;
  readonly prompt_tokens_details?: { readonly cached_tokens?: number | null } | null;
  readonly completion_tokens_details?: { readonly reasoning_tokens?: number | null } | null;
}

/** OpenAI Responses API `usage` (the fields this mapping reads). */
export interface OpenAIResponsesUsage {
  readonly input_tokens: number;
  readonly output_tokens: number;
  readonly input_tokens_details?: { readonly cached_tokens?: number | null } | null;
  readonly output_tokens_details?: { readonly reasoning_tokens?: number | null } | null;
}

/** Anthropic Messages API `usage` (the fields this mapping reads). */
export interface AnthropicUsage {
  readonly input_tokens: number;
  readonly output_tokens: number;
  readonly cache_creation_input_tokens?: number | null;
  readonly cache_read_input_tokens?: number | null;
  readonly cache_creation?: {
    readonly ephemeral_5m_input_tokens?: number | null;
    readonly ephemeral_1h_input_tokens?: number | null;
  } | null;
}

/** A token count of a provider's object: absent or null is 0. */
function count(value: number | null | undefined, field: string, provider: string): bigint {
  if (value === undefined || value === null) return 0n;
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    throw new TypeError(`${provider}: ${field} must be a non-negative integer, not ${String(value)}`);
  }
  return BigInt(value);
}

/** `total − part`, refusing a part above its total (the classes would otherwise go negative). */
function without(total: bigint, part: bigint, totalField: string, partField: string, provider: string): bigint {
  if (part > total) throw new TypeError(`${provider}: ${partField} (${part}) exceeds ${totalField} (${total})`);
  return total - part;
}

/**
 * OpenAI's `usage` (Chat Completions or Responses API, told apart by `prompt_tokens`) as
 * TokenUsage: input = prompt − cached, cached_input = cached, output = completion − reasoning,
 * reasoning = reasoning; OpenAI charges no cache writes, so those stay 0.
 */
export function fromOpenAIUsage(usage: OpenAIChatCompletionsUsage | OpenAIResponsesUsage): TokenUsage {
  const p = "fromOpenAIUsage";
  if ("prompt_tokens" in usage) {
    const prompt = count(usage.prompt_tokens, "prompt_tokens", p);
    const cached = count(usage.prompt_tokens_details?.cached_tokens, "prompt_tokens_details.cached_tokens", p);
    const completion = count(usage.completion_tokens, "completion_tokens", p);
    const reasoning = count(usage.completion_tokens_details?.reasoning_tokens, "completion_tokens_details.reasoning_tokens", p);
    return create(TokenUsageSchema, {
      inputTokens: without(prompt, cached, "prompt_tokens", "prompt_tokens_details.cached_tokens", p),
      cachedInputTokens: cached,
      outputTokens: without(completion, reasoning, "completion_tokens", "completion_tokens_details.reasoning_tokens", p),
      reasoningTokens: reasoning,
    });
  }
  const input = count(usage.input_tokens, "input_tokens", p);
  const cached = count(usage.input_tokens_details?.cached_tokens, "input_tokens_details.cached_tokens", p);
  const output = count(usage.output_tokens, "output_tokens", p);
  const reasoning = count(usage.output_tokens_details?.reasoning_tokens, "output_tokens_details.reasoning_tokens", p);
  return create(TokenUsageSchema, {
    inputTokens: without(input, cached, "input_tokens", "input_tokens_details.cached_tokens", p),
    cachedInputTokens: cached,
    outputTokens: without(output, reasoning, "output_tokens", "output_tokens_details.reasoning_tokens", p),
    reasoningTokens: reasoning,
  });
}

/**
 * Anthropic's `usage` as TokenUsage: input = input_tokens, cached_input =
 * cache_read_input_tokens, cache_write = cache_creation.ephemeral_5m_input_tokens when
 * `cache_creation` is present (else cache_creation_input_tokens), cache_write_1h =
 * cache_creation.ephemeral_1h_input_tokens, output = output_tokens (thinking is billed as
 * output and already in it), reasoning = 0.
 */
export function fromAnthropicUsage(usage: AnthropicUsage): TokenUsage {
  const p = "fromAnthropicUsage";
  const breakdown = usage.cache_creation;
  const hasBreakdown = breakdown !== undefined && breakdown !== null;
  return create(TokenUsageSchema, {
    inputTokens: count(usage.input_tokens, "input_tokens", p),
    cachedInputTokens: count(usage.cache_read_input_tokens, "cache_read_input_tokens", p),
    cacheWriteTokens: hasBreakdown
      ? count(breakdown.ephemeral_5m_input_tokens, "cache_creation.ephemeral_5m_input_tokens", p)
      : count(usage.cache_creation_input_tokens, "cache_creation_input_tokens", p),
    cacheWrite1hTokens: hasBreakdown ? count(breakdown.ephemeral_1h_input_tokens, "cache_creation.ephemeral_1h_input_tokens", p) : 0n,
    outputTokens: count(usage.output_tokens, "output_tokens", p),
  });
}
