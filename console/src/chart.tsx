/**
 * The balance-over-time chart: a stepped line of a wallet's posted balance in one asset,
 * drawn by uPlot (small, fast, canvas) from the journal rows ListTransfers answers.
 *
 * @module
 */
import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { TransferKind, type Transfer } from "@holdfast/client";
import { formatAmount, timestampMs } from "./format.js";

/** One point of the line: the posted balance right after a journal row. */
export interface BalancePoint {
  readonly atMs: number;
  readonly posted: bigint;
}

/**
 * What a journal row does to the wallet's posted balance. Reservations and their voids
 * (RESERVE, RELEASE, EXPIRE) move `held`, not `posted`; every other row posts its amount, into
 * the wallet when it is the credited side and out of it when it is the debited side.
 */
export function postedDelta(transfer: Transfer, walletId: string): bigint {
  switch (transfer.kind) {
    case TransferKind.RESERVE:
    case TransferKind.RELEASE:
    case TransferKind.EXPIRE:
      return 0n;
    default:
      if (transfer.creditWalletId === walletId) return transfer.amount;
      if (transfer.debitWalletId === walletId) return -transfer.amount;
      return 0n;
  }
}

/**
 * The posted balance after each row, oldest first. `rows` come newest first (as ListTransfers
 * answers). With the whole history the line starts from zero; when older rows were left out
 * it ends at `postedNow`, the balance GetWallet answers, and is worked out backwards from it.
 */
export function balanceSeries(rows: readonly Transfer[], walletId: string, asset: string, complete: boolean, postedNow: bigint): BalancePoint[] {
  const mine = rows.filter((t) => t.asset === asset).slice().reverse();
  const deltas = mine.map((t) => postedDelta(t, walletId));
  const total = deltas.reduce((a, b) => a + b, 0n);
  let posted = complete ? 0n : postedNow - total;
  const points = mine.map((t, i) => {
    posted += deltas[i]!;
    return { atMs: timestampMs(t.createdAt) ?? 0, posted };
  });
  // With the whole history, the wallet held nothing just before its first row.
  if (complete && points.length > 0) points.unshift({ atMs: points[0]!.atMs - 1, posted: 0n });
  return points;
}

const CHART_HEIGHT_PX = 220;

/**
 * The chart. uPlot draws numbers, so each bigint balance becomes a Number for drawing only:
 * beyond 2^53 minor units the line is approximate, while every figure printed stays exact.
 */
export function BalanceChart({ points, asset }: { points: readonly BalancePoint[]; asset: string }) {
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const element = box.current;
    if (element === null || points.length === 0) return;
    const xs = points.map((p) => p.atMs / 1000);
    const ys = points.map((p) => Number(p.posted));
    // A single point still draws as a flat line up to now.
    if (xs.length === 1) {
      xs.push(Math.max(xs[0]! + 1, Date.now() / 1000));
      ys.push(ys[0]!);
    }
    const stepped = uPlot.paths.stepped?.({ align: 1 });
    const plot = new uPlot(
      {
        width: Math.max(element.clientWidth, 200),
        height: CHART_HEIGHT_PX,
        legend: { show: false },
        cursor: { drag: { x: false, y: false } },
        // The balance axis always shows zero, so a change is seen at its true size.
        scales: { x: { time: true }, y: { range: (_u, min, max) => [Math.min(0, min), max <= 0 ? 1 : max * 1.1] } },
        axes: [
          { stroke: "#5b6472", grid: { stroke: "#eef0f3" } },
          { stroke: "#5b6472", grid: { stroke: "#eef0f3" }, size: 70, values: (_u, splits) => splits.map((v) => formatAmount(BigInt(Math.round(v)))) },
        ],
        series: [{}, { label: `${asset} posted`, stroke: "#2456d3", width: 2, fill: "rgba(36, 86, 211, 0.08)", paths: stepped, points: { size: 5 } }],
      },
      [xs, ys],
      element,
    );
    const resize = new ResizeObserver(() => plot.setSize({ width: Math.max(element.clientWidth, 200), height: CHART_HEIGHT_PX }));
    resize.observe(element);
    return () => {
      resize.disconnect();
      plot.destroy();
    };
  }, [points, asset]);
  return <div class="chart" ref={box} data-testid="balance-chart" data-points={points.length} aria-label={`${asset} posted balance over time`} />;
}
