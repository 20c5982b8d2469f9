/**
 * A latency histogram with logarithmic buckets, written by hand because the histogram packages
 * on npm either run install scripts or pull in WebAssembly for what is twenty lines here.
 *
 * Memory is fixed whatever the run length (one counter per bucket), and every bucket is about
 * 1.1% wide, so a percentile read from it is within 1.1% of the exact sample: finer than the
 * run-to-run noise of a benchmark on a shared two-core machine.
 */

/** Buckets per doubling of the latency: 2^(1/64) - 1 ≈ 1.1% relative width. */
const BUCKETS_PER_DOUBLING = 64;
/** The smallest latency told apart: 1 µs. Anything faster lands in the first bucket. */
const LATENCY_US_MIN = 1;
/** Doublings above LATENCY_US_MIN: 2^27 µs ≈ 134 s. Anything slower lands in the last bucket. */
const DOUBLINGS_MAX = 27;
const BUCKETS_TOTAL = BUCKETS_PER_DOUBLING * DOUBLINGS_MAX + 1;

/** Histogram contents as JSON: [bucket index, count] pairs of the non-empty buckets. */
export type SparseCounts = [number, number][];

export interface Histogram {
  record(latencyMs: number): void;
  /** The latency in ms below which `percent` of the recorded samples fall (0 when empty). */
  percentile(percent: number): number;
  total(): number;
  maxMs(): number;
  /** Non-empty buckets, to ship between processes or to store in the JSON report. */
  toSparse(): SparseCounts;
}

function bucketOf(latencyMs: number): number {
  const us = latencyMs * 1000;
  if (!(us > LATENCY_US_MIN)) return 0;
  const index = Math.ceil(Math.log2(us / LATENCY_US_MIN) * BUCKETS_PER_DOUBLING);
  return Math.min(index, BUCKETS_TOTAL - 1);
}

/** The upper edge of a bucket, in ms: a percentile never reads lower than the truth. */
function upperEdgeMs(index: number): number {
  return (LATENCY_US_MIN * 2 ** (index / BUCKETS_PER_DOUBLING)) / 1000;
}

export function createHistogram(initial: SparseCounts = []): Histogram {
  const counts = new Float64Array(BUCKETS_TOTAL);
  let total = 0;
  let maxMs = 0;
  for (const [index, count] of initial) {
    counts[index] = (counts[index] ?? 0) + count;
    total += count;
    maxMs = Math.max(maxMs, upperEdgeMs(index));
  }
  return {
    record(latencyMs) {
      counts[bucketOf(latencyMs)]!++;
      total++;
      maxMs = Math.max(maxMs, latencyMs);
    },
    percentile(percent) {
      const rank = Math.ceil((percent / 100) * total);
      let seen = 0;
      for (let i = 0; i < BUCKETS_TOTAL && total > 0; i++) {
        seen += counts[i]!;
        if (seen >= rank) return Math.min(upperEdgeMs(i), maxMs);
      }
      return 0;
    },
    total: () => total,
    maxMs: () => maxMs,
    toSparse() {
      const out: SparseCounts = [];
      counts.forEach((count, index) => count > 0 && out.push([index, count]));
      return out;
    },
  };
}
