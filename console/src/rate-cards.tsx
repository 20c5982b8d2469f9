/**
 * The Rate cards page: every card of the tenant (its version in effect, asset, markup), and for
 * the one chosen, its models with their prices per million tokens (docs/metering.md). Any key
 * may read rate cards; changing them is PutRateCard, from the CLI or the API.
 *
 * @module
 */
import { useState } from "preact/hooks";
import type { ModelPrice, RateCard } from "@holdfast/client";
import { formatNano, formatTime } from "./format.js";
import type { Session } from "./session.js";
import { Empty, ErrorBox, Loading, Pager, Section, useLoad, usePager } from "./ui.js";

const PAGE_SIZE = 50;

export function RateCardsPage({ session }: { session: Session }) {
  const pager = usePager([]);
  const cards = useLoad(() => session.hf.rateCards.listRateCards({ pageSize: PAGE_SIZE, pageToken: pager.token }), [pager.token]);
  const [chosen, setChosen] = useState<string | undefined>(undefined);
  const list = cards.data?.rateCards ?? [];
  return (
    <div class="page">
      <Section title="Rate cards" testId="rate-cards">
        {cards.error !== undefined && <ErrorBox error={cards.error} retry={cards.reload} />}
        {cards.data === undefined && cards.error === undefined && <Loading what="rate cards" />}
        {cards.data !== undefined && list.length === 0 && (
          <Empty>
            <p>No rate cards yet. Put one with <code>holdfast ratecards import</code> or RateCardService.PutRateCard (docs/metering.md); metered calls price against it.</p>
          </Empty>
        )}
        {list.length > 0 && (
          <div class="table-wrap">
            <table>
              <thead>
                <tr>
                  <th>Card</th>
                  <th>Version</th>
                  <th>Asset</th>
                  <th class="num">Markup</th>
                  <th class="num">Models</th>
                  <th class="opt">In effect since</th>
                </tr>
              </thead>
              <tbody>
                {list.map((card) => (
                  <tr key={card.rateCardId} class={card.rateCardId === chosen ? "chosen" : "clickable"} onClick={() => setChosen(card.rateCardId)} data-testid={`card-${card.rateCardId}`}>
                    <td>
                      <a href="#" onClick={(e) => { e.preventDefault(); setChosen(card.rateCardId); }}><code>{card.rateCardId}</code></a>
                    </td>
                    <td>
                      v{card.version}
                      {card.latestVersion > card.version && <span class="muted"> (v{card.latestVersion} scheduled)</span>}
                    </td>
                    <td>
                      {card.asset} <span class="muted">/ {card.tokenAsset}</span>
                    </td>
                    <td class="num">{(card.markupBps / 100).toFixed(2)}%</td>
                    <td class="num">{card.modelCount}</td>
                    <td class="opt nowrap">{formatTime(card.effectiveAt)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
        {cards.data !== undefined && <Pager page={pager.page} nextToken={cards.data.nextPageToken} onNext={() => pager.next(cards.data!.nextPageToken)} onPrevious={pager.previous} />}
      </Section>
      {chosen !== undefined && <CardDetail key={chosen} session={session} rateCardId={chosen} />}
    </div>
  );
}

function CardDetail({ session, rateCardId }: { session: Session; rateCardId: string }) {
  const card = useLoad(() => session.hf.rateCards.getRateCard({ rateCardId }), [rateCardId]);
  return (
    <Section title={`Prices of ${rateCardId}`} testId="rate-card-detail">
      {card.error !== undefined && <ErrorBox error={card.error} retry={card.reload} />}
      {card.data === undefined && card.error === undefined && <Loading what="the rate card" />}
      {card.data?.rateCard !== undefined && <Prices card={card.data.rateCard} />}
    </Section>
  );
}

const PRICE_COLUMNS = [
  ["inputNanoPerMtok", "Input"],
  ["cachedInputNanoPerMtok", "Cached input"],
  ["cacheWriteNanoPerMtok", "Cache write"],
  ["outputNanoPerMtok", "Output"],
  ["reasoningNanoPerMtok", "Reasoning"],
] as const;

/** Prices are kept in billionths of a minor unit per million tokens; shown in minor units, exactly. */
function Prices({ card }: { card: RateCard }) {
  if (card.models.length === 0) return <Empty><p>This version prices no model.</p></Empty>;
  return (
    <>
      <p class="muted">
        Version {card.version}: {card.asset} minor units per million tokens, before the {(card.markupBps / 100).toFixed(2)}% markup.
      </p>
      <div class="table-wrap">
        <table class="stack">
          <thead>
            <tr>
              <th>Model</th>
              {PRICE_COLUMNS.map(([, label]) => (
                <th class="num" key={label}>{label}</th>
              ))}
              <th class="num opt">Tiers</th>
            </tr>
          </thead>
          <tbody>
            {card.models.map((model: ModelPrice) => (
              <tr key={model.model}>
                <td class="full"><code>{model.model}</code></td>
                {PRICE_COLUMNS.map(([field, label]) => (
                  <td class="num" data-label={label.toLowerCase()} key={label}>{model[field] === undefined ? "—" : formatNano(model[field])}</td>
                ))}
                <td class="num opt">{model.tiers.length}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </>
  );
}
