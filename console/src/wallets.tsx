/**
 * The Wallets page: find a wallet by id, then its balances per asset kept live by WatchWallet,
 * the posted balance over time, its holds (with a countdown to expiry), its journal a page at
 * a time, and its grants. Keys that may write get capture, release and refund next to the rows
 * they apply to; the ledger checks every one of them again.
 *
 * @module
 */
import { useEffect, useMemo, useState } from "preact/hooks";
import {
  GrantStatus,
  HoldStatus,
  TransferKind,
  WalletNotFoundError,
  WalletStatus,
  type Balance,
  type Hold,
  type Transfer,
  type Wallet,
} from "@holdfast/client";
import { BalanceChart, balanceSeries } from "./chart.js";
import { enumLabel, formatAmount, formatCountdown, formatTime, parseAmount, shortId, timestampMs } from "./format.js";
import { canWrite, type Session } from "./session.js";
import { ConfirmButton, Empty, ErrorBox, Loading, Pager, Section, useLoad, useNow, usePager } from "./ui.js";

const PAGE_SIZE = 20;
/** The chart reads at most this many journal rows (two pages of the API's largest). */
const CHART_ROWS_MAX = 1000;
const CHART_PAGE_SIZE = 500;
/** Changes arriving together (a capture writes several rows) refresh the lists once. */
const REFRESH_DEBOUNCE_MS = 250;
const WALLET_ID_PATTERN = /^[A-Za-z0-9_:-]{1,128}$/;

export function WalletsPage({ session, walletId }: { session: Session; walletId: string | undefined }) {
  return (
    <div class="page">
      <FindWallet initial={walletId ?? ""} />
      {walletId === undefined ? (
        <Empty>
          <p>Enter a wallet id above (for example <code>user_123</code>) to see its balances, holds, transfers and grants.</p>
          <p>There is no list of wallets: a wallet is created by its first Deposit (API or SDK) under the id your product chose.</p>
        </Empty>
      ) : (
        <WalletView key={walletId} session={session} walletId={walletId} />
      )}
    </div>
  );
}

function FindWallet({ initial }: { initial: string }) {
  const [text, setText] = useState(initial);
  const [invalid, setInvalid] = useState(false);
  useEffect(() => setText(initial), [initial]);
  const submit = (event: Event) => {
    event.preventDefault();
    const id = text.trim();
    if (!WALLET_ID_PATTERN.test(id)) {
      setInvalid(true);
      return;
    }
    setInvalid(false);
    window.location.hash = `#/wallets/${encodeURIComponent(id)}`;
  };
  return (
    <form class="find" onSubmit={submit} role="search">
      <label for="wallet-id">Wallet id</label>
      <input id="wallet-id" name="wallet-id" value={text} placeholder="user_123" autoComplete="off" spellcheck={false} onInput={(e) => setText(e.currentTarget.value)} />
      <button type="submit">Open</button>
      {invalid && <span class="inline-error">A wallet id is 1-128 characters of letters, digits, _ : and -.</span>}
    </form>
  );
}

type Live = "connecting" | "live" | "lost";

function WalletView({ session, walletId }: { session: Session; walletId: string }) {
  const wallet = useLoad(() => session.hf.wallet(walletId).get(), [walletId]);
  const [balances, setBalances] = useState<ReadonlyMap<string, Balance>>(new Map());
  const [live, setLive] = useState<Live>("connecting");
  const [changes, setChanges] = useState(0);
  const [refresh, setRefresh] = useState(0);
  useEffect(() => {
    if (wallet.data !== undefined) setBalances(new Map(wallet.data.balances.map((b) => [b.asset, b])));
  }, [wallet.data]);
  const found = wallet.data !== undefined;
  useEffect(() => {
    if (!found) return;
    const abort = new AbortController();
    void (async () => {
      try {
        for await (const change of session.hf.wallet(walletId).watch({ signal: abort.signal })) {
          const balance = change.balance;
          if (balance !== undefined) setBalances((previous) => new Map(previous).set(balance.asset, balance));
          setLive("live");
          if (change.eventType !== "snapshot") setChanges((n) => n + 1);
        }
      } catch {
        if (!abort.signal.aborted) setLive("lost");
      }
    })();
    return () => abort.abort();
  }, [found, walletId]);
  useEffect(() => {
    if (changes === 0) return;
    const timer = setTimeout(() => setRefresh(changes), REFRESH_DEBOUNCE_MS);
    return () => clearTimeout(timer);
  }, [changes]);

  if (wallet.data === undefined) {
    if (wallet.error instanceof WalletNotFoundError) {
      return (
        <Empty>
          <p data-testid="wallet-not-found">No wallet <code>{walletId}</code> in this tenant.</p>
          <p>Check the id, or create the wallet with its first deposit, then open it again.</p>
        </Empty>
      );
    }
    if (wallet.error !== undefined) return <ErrorBox error={wallet.error} retry={wallet.reload} />;
    return <Loading what="the wallet" />;
  }
  const writer = canWrite(session.role);
  const assets = [...balances.keys()].sort();
  return (
    <>
      <WalletHeader wallet={wallet.data} live={live} />
      <Balances balances={assets.map((a) => balances.get(a)!)} />
      <ChartSection session={session} walletId={walletId} assets={assets} balances={balances} refresh={refresh} />
      <Holds session={session} walletId={walletId} writer={writer} refresh={refresh} />
      <Transfers session={session} walletId={walletId} writer={writer} refresh={refresh} />
      <Grants session={session} walletId={walletId} refresh={refresh} />
    </>
  );
}

function WalletHeader({ wallet, live }: { wallet: Wallet; live: Live }) {
  const status = enumLabel(WalletStatus, wallet.status, "");
  const liveText = { connecting: "connecting…", live: "live", lost: "updates stopped: reload the page" }[live];
  return (
    <div class="wallet-head">
      <h1 data-testid="wallet-title">{wallet.walletId}</h1>
      <span class={`badge status-${status}`}>{status}</span>
      <span class={`live live-${live}`} data-testid="live" data-state={live} title="Balances follow WatchWallet">
        ● {liveText}
      </span>
      <span class="muted">created {formatTime(wallet.createdAt)}</span>
    </div>
  );
}

const BALANCE_FIELDS = [
  ["posted", "Posted"],
  ["held", "Held"],
  ["available", "Available"],
  ["scheduled", "Scheduled"],
  ["creditLimit", "Credit limit"],
] as const;

function Balances({ balances }: { balances: readonly Balance[] }) {
  if (balances.length === 0) {
    return (
      <Section title="Balances">
        <Empty>
          <p>This wallet holds no asset yet. A deposit or a grant gives it its first balance, which appears here at once.</p>
        </Empty>
      </Section>
    );
  }
  return (
    <div class="balances">
      {balances.map((b) => (
        <section class="card balance" data-testid={`balance-${b.asset}`} key={b.asset}>
          <header class="card-head">
            <h2>{b.asset}</h2>
            <span class="muted">minor units</span>
          </header>
          <dl>
            {BALANCE_FIELDS.map(([field, label]) => (
              <div class={field === "available" ? "main" : ""} key={field}>
                <dt>{label}</dt>
                <dd data-field={field}>{formatAmount(b[field])}</dd>
              </div>
            ))}
          </dl>
        </section>
      ))}
    </div>
  );
}

function ChartSection({ session, walletId, assets, balances, refresh }: {
  session: Session;
  walletId: string;
  assets: readonly string[];
  balances: ReadonlyMap<string, Balance>;
  refresh: number;
}) {
  const [chosen, setChosen] = useState<string | undefined>(undefined);
  const asset = chosen !== undefined && assets.includes(chosen) ? chosen : assets[0];
  const rows = useLoad(async () => {
    if (asset === undefined) return { rows: [] as Transfer[], complete: true };
    const collected: Transfer[] = [];
    let token = "";
    do {
      const page = await session.hf.ledger.listTransfers({ walletId, asset, pageSize: CHART_PAGE_SIZE, pageToken: token });
      collected.push(...page.transfers);
      token = page.nextPageToken;
    } while (token !== "" && collected.length < CHART_ROWS_MAX);
    return { rows: collected, complete: token === "" };
  }, [walletId, asset, refresh]);
  const postedNow = asset === undefined ? 0n : (balances.get(asset)?.posted ?? 0n);
  const points = useMemo(
    () => (rows.data === undefined || asset === undefined ? [] : balanceSeries(rows.data.rows, walletId, asset, rows.data.complete, postedNow)),
    [rows.data, asset, walletId],
  );
  if (asset === undefined) return null;
  const picker =
    assets.length > 1 ? (
      <select aria-label="asset" value={asset} onChange={(e) => setChosen(e.currentTarget.value)}>
        {assets.map((a) => (
          <option value={a} key={a}>{a}</option>
        ))}
      </select>
    ) : undefined;
  return (
    <Section title={`Posted balance over time (${asset})`} actions={picker} testId="chart-section">
      {rows.error !== undefined && <ErrorBox error={rows.error} retry={rows.reload} />}
      {rows.data === undefined && rows.error === undefined && <Loading what="the journal" />}
      {rows.data !== undefined && points.length === 0 && (
        <Empty>
          <p>No journal rows in {asset} yet: the line starts with the first deposit.</p>
        </Empty>
      )}
      {points.length > 0 && <BalanceChart points={points} asset={asset} />}
      {rows.data !== undefined && !rows.data.complete && <p class="muted">The last {rows.data.rows.length} rows; older ones are left out of the chart.</p>}
    </Section>
  );
}

function Holds({ session, walletId, writer, refresh }: { session: Session; walletId: string; writer: boolean; refresh: number }) {
  const [status, setStatus] = useState<HoldStatus>(HoldStatus.PENDING);
  const pager = usePager([walletId, status]);
  const holds = useLoad(
    () => session.hf.ledger.listHolds({ walletId, status, pageSize: PAGE_SIZE, pageToken: pager.token }),
    [walletId, status, pager.token, refresh],
  );
  const now = useNow();
  const filter = (
    <select aria-label="hold status" value={String(status)} onChange={(e) => setStatus(Number(e.currentTarget.value) as HoldStatus)}>
      <option value={String(HoldStatus.PENDING)}>Pending</option>
      <option value={String(HoldStatus.UNSPECIFIED)}>All</option>
      <option value={String(HoldStatus.CAPTURED)}>Captured</option>
      <option value={String(HoldStatus.RELEASED)}>Released</option>
      <option value={String(HoldStatus.EXPIRED)}>Expired</option>
    </select>
  );
  return (
    <Section title="Holds" actions={filter} testId="holds">
      {holds.error !== undefined && <ErrorBox error={holds.error} retry={holds.reload} />}
      {holds.data === undefined && holds.error === undefined && <Loading what="holds" />}
      {holds.data !== undefined && holds.data.holds.length === 0 && (
        <Empty>
          <p>{status === HoldStatus.PENDING ? "No pending holds: nothing is reserved in this wallet right now." : "No holds with this status."}</p>
        </Empty>
      )}
      {holds.data !== undefined && holds.data.holds.length > 0 && (
        <div class="table-wrap">
          <table class="stack">
            <thead>
              <tr>
                <th>Hold</th>
                <th class="num">Amount</th>
                <th>Status</th>
                <th>Expires</th>
                <th class="num opt">Captured</th>
                {writer && <th>Actions</th>}
              </tr>
            </thead>
            <tbody>
              {holds.data.holds.map((hold) => (
                <HoldRow key={hold.holdId} session={session} hold={hold} writer={writer} now={now} onDone={holds.reload} />
              ))}
            </tbody>
          </table>
        </div>
      )}
      {holds.data !== undefined && <Pager page={pager.page} nextToken={holds.data.nextPageToken} onNext={() => pager.next(holds.data!.nextPageToken)} onPrevious={pager.previous} />}
    </Section>
  );
}

function HoldRow({ session, hold, writer, now, onDone }: { session: Session; hold: Hold; writer: boolean; now: number; onDone: () => void }) {
  const pending = hold.status === HoldStatus.PENDING;
  const expiresMs = timestampMs(hold.expiresAt) ?? 0;
  const expired = pending && expiresMs <= now;
  const status = expired ? "expired" : enumLabel(HoldStatus, hold.status, "");
  return (
    <tr data-testid={`hold-${hold.holdId}`}>
      <td title={hold.holdId}>
        <code>{shortId(hold.holdId)}</code>
      </td>
      <td class="num">
        {formatAmount(hold.amount)} <span class="muted">{hold.asset}</span>
      </td>
      <td>
        <span class={`badge status-${status}`} data-field="status">{status}</span>
      </td>
      <td class="num-narrow" data-field="expires" title={formatTime(hold.expiresAt)}>
        {pending ? formatCountdown(expiresMs, now) : `closed ${formatTime(hold.closedAt)}`}
      </td>
      <td class="num opt">{hold.status === HoldStatus.CAPTURED ? formatAmount(hold.capturedAmount) : "—"}</td>
      {writer && <td class="full">{pending && !expired && <HoldActions session={session} hold={hold} onDone={onDone} />}</td>}
    </tr>
  );
}

function HoldActions({ session, hold, onDone }: { session: Session; hold: Hold; onDone: () => void }) {
  const [amountText, setAmountText] = useState("");
  const [invalid, setInvalid] = useState(false);
  const capture = async () => {
    const amount = amountText.trim() === "" ? undefined : parseAmount(amountText);
    if (amount === null) {
      setInvalid(true);
      throw new Error("the amount must be a whole number of minor units");
    }
    setInvalid(false);
    await session.hf.hold(hold.holdId).capture(amount === undefined ? {} : { amount });
  };
  return (
    <div class="actions">
      <input
        class={`amount ${invalid ? "invalid" : ""}`}
        aria-label="capture amount"
        inputMode="numeric"
        placeholder={`all ${formatAmount(hold.amount)}`}
        value={amountText}
        onInput={(e) => setAmountText(e.currentTarget.value)}
      />
      <ConfirmButton label="Capture" confirm="Confirm capture" testId="capture" action={capture} onDone={onDone} />
      <ConfirmButton label="Release" confirm="Confirm release" testId="release" action={() => session.hf.hold(hold.holdId).release()} onDone={onDone} />
    </div>
  );
}

const REFUNDABLE = new Set<TransferKind>([TransferKind.SPEND, TransferKind.CAPTURE]);

function Transfers({ session, walletId, writer, refresh }: { session: Session; walletId: string; writer: boolean; refresh: number }) {
  const pager = usePager([walletId]);
  const transfers = useLoad(
    () => session.hf.ledger.listTransfers({ walletId, pageSize: PAGE_SIZE, pageToken: pager.token }),
    [walletId, pager.token, refresh],
  );
  const [done, setDone] = useState<string | undefined>(undefined);
  return (
    <Section title="Transfers" testId="transfers">
      {done !== undefined && <p class="notice" role="status">{done}</p>}
      {transfers.error !== undefined && <ErrorBox error={transfers.error} retry={transfers.reload} />}
      {transfers.data === undefined && transfers.error === undefined && <Loading what="transfers" />}
      {transfers.data !== undefined && transfers.data.transfers.length === 0 && (
        <Empty>
          <p>No journal rows yet. Every deposit, spend, hold and refund of this wallet will be listed here, newest first.</p>
        </Empty>
      )}
      {transfers.data !== undefined && transfers.data.transfers.length > 0 && (
        <div class="table-wrap">
          <table class="stack">
            <thead>
              <tr>
                <th>Time</th>
                <th>Kind</th>
                <th class="num">Amount</th>
                <th class="opt">Counterparty</th>
                <th class="opt">Hold</th>
                <th class="opt">Id</th>
                {writer && <th>Actions</th>}
              </tr>
            </thead>
            <tbody>
              {transfers.data.transfers.map((t) => (
                <TransferRow key={t.transferId} session={session} walletId={walletId} transfer={t} writer={writer} onRefunded={(text) => { setDone(text); transfers.reload(); }} />
              ))}
            </tbody>
          </table>
        </div>
      )}
      {transfers.data !== undefined && (
        <Pager page={pager.page} nextToken={transfers.data.nextPageToken} onNext={() => pager.next(transfers.data!.nextPageToken)} onPrevious={pager.previous} />
      )}
    </Section>
  );
}

function TransferRow({ session, walletId, transfer, writer, onRefunded }: {
  session: Session;
  walletId: string;
  transfer: Transfer;
  writer: boolean;
  onRefunded: (text: string) => void;
}) {
  const incoming = transfer.creditWalletId === walletId;
  const pendingOnly = transfer.kind === TransferKind.RESERVE || transfer.kind === TransferKind.RELEASE || transfer.kind === TransferKind.EXPIRE;
  const sign = pendingOnly ? "" : incoming ? "+" : "−";
  const counterparty = incoming ? transfer.debitWalletId : transfer.creditWalletId;
  const kind = enumLabel(TransferKind, transfer.kind, "");
  const refund = async () => {
    const r = await session.hf.refund({ transferId: transfer.transferId });
    onRefunded(`Refunded ${formatAmount(r.transfer?.amount ?? 0n)} ${transfer.asset}.`);
  };
  return (
    <tr data-testid={`transfer-${transfer.transferId}`} data-kind={kind}>
      <td class="nowrap full muted-narrow">{formatTime(transfer.createdAt)}</td>
      <td>
        <span class={`badge kind-${kind}`}>{kind}</span>
      </td>
      <td class={`num ${sign === "+" ? "credit" : sign === "−" ? "debit" : ""}`}>
        {sign}
        {formatAmount(transfer.amount)} <span class="muted">{transfer.asset}</span>
      </td>
      <td class="opt">
        <code>{counterparty}</code>
      </td>
      <td class="opt" title={transfer.holdId}>
        {transfer.holdId ? <code>{shortId(transfer.holdId)}</code> : "—"}
      </td>
      <td class="opt" title={transfer.transferId}>
        <code>{shortId(transfer.transferId)}</code>
      </td>
      {writer && (
        <td class="full">{REFUNDABLE.has(transfer.kind) && transfer.debitWalletId === walletId && <ConfirmButton label="Refund" confirm="Refund all" testId="refund" action={refund} />}</td>
      )}
    </tr>
  );
}

function Grants({ session, walletId, refresh }: { session: Session; walletId: string; refresh: number }) {
  const grants = useLoad(() => session.hf.ledger.listGrants({ walletId, includeClosed: true, pageSize: PAGE_SIZE }), [walletId, refresh]);
  const now = useNow();
  return (
    <Section title="Grants" testId="grants">
      {grants.error !== undefined && <ErrorBox error={grants.error} retry={grants.reload} />}
      {grants.data === undefined && grants.error === undefined && <Loading what="grants" />}
      {grants.data !== undefined && grants.data.grants.length === 0 && (
        <Empty>
          <p>No grants. Deposits go into the wallet's default grant, listed here after the first one; CreateGrant adds promotional or scheduled credit.</p>
        </Empty>
      )}
      {grants.data !== undefined && grants.data.grants.length > 0 && (
        <div class="table-wrap">
          <table class="stack">
            <thead>
              <tr>
                <th>Grant</th>
                <th>Category</th>
                <th class="num">Remaining</th>
                <th class="num opt">Held</th>
                <th class="num opt">Amount</th>
                <th>Status</th>
                <th>Expires</th>
              </tr>
            </thead>
            <tbody>
              {grants.data.grants.map((g) => {
                const expiresMs = timestampMs(g.expiresAt);
                return (
                  <tr key={g.grantId} data-testid={`grant-${g.grantId}`}>
                    <td title={g.grantId}>
                      <code>{shortId(g.grantId)}</code>
                    </td>
                    <td>
                      {g.category} <span class="muted">p{g.priority}</span>
                    </td>
                    <td class="num">
                      {formatAmount(g.remaining)} <span class="muted">{g.asset}</span>
                    </td>
                    <td class="num opt">{formatAmount(g.held)}</td>
                    <td class="num opt">{formatAmount(g.amount)}</td>
                    <td>
                      <span class={`badge status-${enumLabel(GrantStatus, g.status, "")}`}>{enumLabel(GrantStatus, g.status, "")}</span>
                    </td>
                    <td class="num-narrow" data-label="expires">{expiresMs === undefined ? "never" : expiresMs > now ? `in ${formatCountdown(expiresMs, now)}` : formatTime(g.expiresAt)}</td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
      {grants.data !== undefined && grants.data.nextPageToken !== "" && <p class="muted">The first {PAGE_SIZE} grants; more exist.</p>}
    </Section>
  );
}

