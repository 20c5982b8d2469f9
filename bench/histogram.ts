/**
 * A latency histogram with logarithmic buckets, written by hand because the histogram packages
 * on npm either run install scripts or pull in WebAssembly for what is twenty lines here.
 *
 * Memory is fixed whatever the run length (one counter per bucket), and every bucket is about
 * 1.1% wide, so a percentile read from it is within 1.1% of the exact sample: finer than the
 * run-to-run noise of a benchmark on a shared two-core machine.
 */

/** Buckets per doubling of the latency: 2^(1/64) - 1 ≈ 1.1% relative width. */
const buckets_per_doubling = 64;
/** The smallest latency told apart: 1 µs. Anything faster lands in the first bucket. */
const latency_min_us = 1;
/** Doublings above latency_min_us: 2^27 µs ≈ 134 s. Anything slower lands in the last bucket. */
const doublings_max = 27;
const buckets_total = buckets_per_doubling * doublings_max + 1;

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
  if (!(us > latency_min_us)) return 0;
  const index = Math.ceil(Math.log2(us / latency_min_us) * buckets_per_doubling);
  return Math.min(index, buckets_total - 1);
}

/** The upper edge of a bucket, in ms: a percentile never reads lower than the truth. */
function upperEdgeMs(index: number): number {
  return (latency_min_us * 2 ** (index / buckets_per_doubling)) / 1000;
}

export function createHistogram(initial: SparseCounts = []): Histogram {
  const counts = new Float64Array(buckets_total);
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
      for (let i = 0; i < buckets_total && total > 0; i++) {
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
