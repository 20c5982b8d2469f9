/**
 * The Webhooks page (admin keys): the tenant's endpoints, and for the one chosen its
 * deliveries with their status, attempts and last error, a page at a time, with a retry for
 * those that failed for good (docs/webhooks.md).
 *
 * @module
 */
import { useState } from "preact/hooks";
import { DeliveryStatus, DisabledReason, type WebhookEndpoint } from "@holdfast/client/proto";
import { enumLabel, formatTime, shortId } from "./format.js";
import type { Session } from "./session.js";
import { ConfirmButton, Empty, ErrorBox, Loading, Pager, Section, useLoad, usePager } from "./ui.js";

/** A tenant has at most 100 endpoints (WEBHOOK_ENDPOINT_LIMIT), so one page holds them all. */
const ENDPOINTS_PAGE_SIZE = 100;
const DELIVERIES_PAGE_SIZE = 20;

export function WebhooksPage({ session }: { session: Session }) {
  const endpoints = useLoad(() => session.hf.webhooks.listEndpoints({ pageSize: ENDPOINTS_PAGE_SIZE }), []);
  const [chosen, setChosen] = useState<string | undefined>(undefined);
  const list = endpoints.data?.endpoints ?? [];
  const endpoint = list.find((e) => e.endpointId === chosen) ?? list[0];
  return (
    <div class="page">
      <Section title="Webhook endpoints" testId="endpoints">
        {endpoints.error !== undefined && <ErrorBox error={endpoints.error} retry={endpoints.reload} />}
        {endpoints.data === undefined && endpoints.error === undefined && <Loading what="endpoints" />}
        {endpoints.data !== undefined && list.length === 0 && (
          <Empty>
            <p>No webhook endpoints yet. Register one with WebhookService.CreateEndpoint (docs/webhooks.md); its deliveries will show here.</p>
          </Empty>
        )}
        {list.length > 0 && (
          <div class="table-wrap">
            <table>
              <thead>
                <tr>
                  <th>URL</th>
                  <th>State</th>
                  <th class="opt">Events</th>
                  <th class="opt">Created</th>
                </tr>
              </thead>
              <tbody>
                {list.map((e) => (
                  <tr key={e.endpointId} class={e === endpoint ? "chosen" : "clickable"} onClick={() => setChosen(e.endpointId)} data-testid={`endpoint-${e.endpointId}`}>
                    <td class="wrap">
                      <a href="#" onClick={(event) => { event.preventDefault(); setChosen(e.endpointId); }}>{e.url}</a>
                      {e.description && <div class="muted">{e.description}</div>}
                    </td>
                    <td>
                      <EndpointState endpoint={e} />
                    </td>
                    <td class="opt">{e.eventTypes.length === 0 ? "all" : e.eventTypes.join(", ")}</td>
                    <td class="opt nowrap">{formatTime(e.createdAt)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </Section>
      {endpoint !== undefined && <Deliveries key={endpoint.endpointId} session={session} endpoint={endpoint} />}
    </div>
  );
}

function EndpointState({ endpoint }: { endpoint: WebhookEndpoint }) {
  if (!endpoint.enabled) {
    return <span class="badge status-failed">disabled ({enumLabel(DisabledReason, endpoint.disabledReason, "")})</span>;
  }
  if (endpoint.failingSince !== undefined) {
    return <span class="badge status-pending" title={`failing since ${formatTime(endpoint.failingSince)}`}>failing</span>;
  }
  return <span class="badge status-succeeded">enabled</span>;
}

function Deliveries({ session, endpoint }: { session: Session; endpoint: WebhookEndpoint }) {
  const [status, setStatus] = useState<DeliveryStatus>(DeliveryStatus.UNSPECIFIED);
  const pager = usePager([status]);
  const deliveries = useLoad(
    () => session.hf.webhooks.listDeliveries({ endpointId: endpoint.endpointId, status, pageSize: DELIVERIES_PAGE_SIZE, pageToken: pager.token }),
    [endpoint.endpointId, status, pager.token],
  );
  const filter = (
    <select aria-label="delivery status" value={String(status)} onChange={(e) => setStatus(Number(e.currentTarget.value) as DeliveryStatus)}>
      <option value={String(DeliveryStatus.UNSPECIFIED)}>All</option>
      <option value={String(DeliveryStatus.PENDING)}>Pending</option>
      <option value={String(DeliveryStatus.SUCCEEDED)}>Succeeded</option>
      <option value={String(DeliveryStatus.FAILED)}>Failed</option>
    </select>
  );
  const rows = deliveries.data?.deliveries ?? [];
  return (
    <Section title={`Deliveries to ${endpoint.url}`} actions={filter} testId="deliveries">
      {deliveries.error !== undefined && <ErrorBox error={deliveries.error} retry={deliveries.reload} />}
      {deliveries.data === undefined && deliveries.error === undefined && <Loading what="deliveries" />}
      {deliveries.data !== undefined && rows.length === 0 && (
        <Empty>
          <p>No deliveries{status === DeliveryStatus.UNSPECIFIED ? "" : " with this status"}. Events the endpoint subscribes to are delivered by the webhook worker and listed here.</p>
        </Empty>
      )}
      {rows.length > 0 && (
        <div class="table-wrap">
          <table class="stack">
            <thead>
              <tr>
                <th>Event</th>
                <th>Status</th>
                <th class="num">Attempts</th>
                <th>Last error</th>
                <th class="opt">Last attempt</th>
                <th class="opt">Next attempt</th>
                <th>Actions</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((d) => {
                const state = enumLabel(DeliveryStatus, d.status, "");
                return (
                  <tr key={d.deliveryId} data-testid={`delivery-${d.deliveryId}`}>
                    <td>
                      <div>{d.eventType}</div>
                      <code class="muted" title={d.eventId}>{shortId(d.eventId)}</code>
                    </td>
                    <td>
                      <span class={`badge status-${state}`}>{state}</span>
                    </td>
                    <td class="num num-narrow" data-label="attempts">{d.attempts}</td>
                    <td class="wrap full" data-label="last error">{d.lastError === "" ? "—" : d.lastError}</td>
                    <td class="opt nowrap">{formatTime(d.lastAttemptAt)}</td>
                    <td class="opt nowrap">{formatTime(d.nextAttemptAt)}</td>
                    <td class="full">
                      {(d.status === DeliveryStatus.FAILED || (d.status === DeliveryStatus.PENDING && d.attempts > 0)) && (
                        <ConfirmButton label="Retry" confirm="Retry now" testId="retry" action={() => session.hf.webhooks.retryDelivery({ deliveryId: d.deliveryId })} onDone={deliveries.reload} />
                      )}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
      {deliveries.data !== undefined && (
        <Pager page={pager.page} nextToken={deliveries.data.nextPageToken} onNext={() => pager.next(deliveries.data!.nextPageToken)} onPrevious={pager.previous} />
      )}
    </Section>
  );
}
