// Consortium-wide figures from what sites send — never item-level results. A consortium figure
// is the count-weighted mean of the sites' figures (for accuracy, recall of a diagnosis, exact
// match, loss per token, Brier: exactly the figure of all the sites' items pooled; for F1,
// ECE and latency quantiles: the sites' figures averaged by their item counts). Its 95% interval
// is a stratified bootstrap with the sites as strata: each site resampled its own items B times
// and sent the figure on each resample; replicate b of the consortium is the same weighted mean
// of the sites' replicate b (weights fixed at the observed counts), and the interval is the
// percentile interval of those B values (a replicate undefined at any site is left out). Sites
// draw independently (their draws are labelled by their own items), so combining replicate b
// across sites is a valid joint resample. No interval when a contributing site sent no replicates
// or a different B.
import type { Database } from 'better-sqlite3-multiple-ciphers';
import { percentileInterval } from '../../shared/bootstrap-interval.ts';

/** The stored replicates of these metric rows (metric_bootstrap), by row id. */
export function replicatesOf(db: Database, ids: number[]): Map<number, Float32Array> {
  const out = new Map<number, Float32Array>();
  const q = db.prepare('SELECT metric_id AS id, replicates AS r FROM metric_bootstrap WHERE metric_id = ?');
  for (const id of ids) {
    const row = q.get(id) as { id: number; r: Buffer } | undefined;
    if (!row) continue;
    const copy = new Uint8Array(row.r); // aligned copy of the blob
    out.set(id, new Float32Array(copy.buffer, 0, copy.length / 4));
  }
  return out;
}

/** The consortium interval of the count-weighted mean of these sites' figures, or null. */
export function pooledInterval(parts: { count: number; replicates: Float32Array | undefined }[]): [number, number] | null {
  if (parts.length === 0 || parts.some((p) => !p.replicates)) return null;
  const B = parts[0].replicates!.length;
  if (B === 0 || parts.some((p) => p.replicates!.length !== B)) return null;
  const total = parts.reduce((a, p) => a + p.count, 0);
  if (!(total > 0)) return null;
  const pooled = new Float64Array(B);
  for (let b = 0; b < B; b++) {
    let s = 0;
    for (const p of parts) s += p.count * p.replicates![b];
    pooled[b] = s / total;
  }
  return percentileInterval(pooled);
}
