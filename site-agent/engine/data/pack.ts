// Examples -> fixed-shape PackedBatches.
//
// 'pack' (default): several examples share a row (first fit, in seeded-shuffled order), each a
//   segment with its own positions (restarting at 0) and segment id; attention stays inside a
//   segment (the graph masks on segmentIds), so packing changes no example's loss, and padding
//   is only the tail of each row.
// 'bucket': one example per row, rows grouped by similar length; with `bucketMultiple` each batch
//   gets its own seq (longest example rounded up), otherwise every batch has `seq` columns.
// targets[t] = labels[t+1] of the same segment (HF's shift), -100 at segment ends and padding.

import { fail } from '../../../shared/errors.ts';
import type { Example, PackedBatch } from '../types.ts';
import { IGNORE_INDEX } from './examples.ts';
import { mulberry32 } from '../../../shared/prng.ts';

export interface PackOptions {
  batch: number;
  seq: number;
  seed: number;
  shuffle?: boolean;
  mode?: 'pack' | 'bucket';
  /** bucket mode: round each batch's seq up to a multiple of this (0 = always `seq`). */
  bucketMultiple?: number;
  /** Token id written at padding positions (never attended to, never a target). Default 0. */
  padId?: number;
}

export interface PackStats {
  batches: number;
  rows: number;
  positions: number;
  realTokens: number;
  countedTokens: number;
  /** Share of positions that are padding. */
  paddingFraction: number;
}

function shuffled<T>(items: T[], seed: number): T[] {
  const out = [...items];
  const rnd = mulberry32(seed);
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

/** Fill one fixed-shape batch from rows of examples. */
function buildBatch(rows: Example[][], batch: number, seq: number, padId = 0): PackedBatch {
  const n = batch * seq;
  const inputIds = new BigInt64Array(n).fill(BigInt(padId));
  const positionIds = new BigInt64Array(n);
  const segmentIds = new Int32Array(n);
  const targets = new BigInt64Array(n).fill(BigInt(IGNORE_INDEX));
  let countedTokens = 0;
  let realTokens = 0;
  if (rows.length > batch) throw fail('FEDLORA_ERR_INTERNAL', `buildBatch: ${rows.length} rows for batch ${batch}`);
  rows.forEach((row, r) => {
    let at = r * seq;
    row.forEach((ex, s) => {
      const len = ex.inputIds.length;
      if (at + len > (r + 1) * seq) throw fail('FEDLORA_ERR_INTERNAL', `buildBatch: row ${r} overflows seq ${seq}`);
      for (let t = 0; t < len; t++) {
        inputIds[at + t] = BigInt(ex.inputIds[t]);
        positionIds[at + t] = BigInt(t);
        segmentIds[at + t] = s + 1;
        const next = t + 1 < len ? ex.labels[t + 1] : IGNORE_INDEX;
        targets[at + t] = BigInt(next);
        if (next !== IGNORE_INDEX) countedTokens++;
      }
      realTokens += len;
      at += len;
    });
  });
  return { batch, seq, inputIds, positionIds, segmentIds, targets, countedTokens, realTokens };
}

function checkExamples(examples: Example[], seq: number): void {
  examples.forEach((ex, i) => {
    if (ex.inputIds.length !== ex.labels.length) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `example ${i}: ${ex.inputIds.length} input ids but ${ex.labels.length} labels`);
    if (ex.inputIds.length === 0) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `example ${i}: empty`);
    if (ex.inputIds.length > seq) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `example ${i}: ${ex.inputIds.length} tokens do not fit seq ${seq} (load with maxSeqLen <= seq)`);
  });
}

export function packExamplesWithStats(examples: Example[], opts: PackOptions): { batches: PackedBatch[]; stats: PackStats } {
  const { batch, seq } = opts;
  if (!Number.isInteger(batch) || batch < 1) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `batch must be a positive integer, got ${batch}`);
  if (!Number.isInteger(seq) || seq < 2) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `seq must be an integer >= 2, got ${seq}`);
  checkExamples(examples, seq);
  const order = opts.shuffle === false ? [...examples] : shuffled(examples, opts.seed);
  const batches: PackedBatch[] = [];
  if ((opts.mode ?? 'pack') === 'pack') {
    // First fit over the most recent open rows (bounded scan keeps it linear on big sets).
    const rows: { items: Example[]; used: number }[] = [];
    const WINDOW = 64;
    for (const ex of order) {
      const len = ex.inputIds.length;
      let placed = false;
      for (let i = Math.max(0, rows.length - WINDOW); i < rows.length; i++) {
        if (rows[i].used + len <= seq) {
          rows[i].items.push(ex);
          rows[i].used += len;
          placed = true;
          break;
        }
      }
      if (!placed) rows.push({ items: [ex], used: len });
    }
    for (let i = 0; i < rows.length; i += batch) batches.push(buildBatch(rows.slice(i, i + batch).map((r) => r.items), batch, seq, opts.padId));
  } else {
    // Stable sort by length over the shuffled order: equal lengths keep the seeded order.
    const sorted = order.map((ex, i) => ({ ex, i })).sort((a, b) => a.ex.inputIds.length - b.ex.inputIds.length || a.i - b.i).map((x) => x.ex);
    const groups: Example[][] = [];
    for (let i = 0; i < sorted.length; i += batch) groups.push(sorted.slice(i, i + batch));
    const m = opts.bucketMultiple ?? 0;
    const grouped = opts.shuffle === false ? groups : shuffled(groups, opts.seed + 1);
    for (const g of grouped) {
      const longest = Math.max(...g.map((e) => e.inputIds.length));
      const s = m > 0 ? Math.min(seq, Math.ceil(longest / m) * m) : seq;
      batches.push(buildBatch(g.map((e) => [e]), batch, s, opts.padId));
    }
  }
  return { batches, stats: batchStats(batches) };
}

/** Pack examples into fixed-shape batches (see the file comment). Deterministic for a seed. */
export function packExamples(examples: Example[], opts: PackOptions): PackedBatch[] {
  return packExamplesWithStats(examples, opts).batches;
}

export function batchStats(batches: PackedBatch[]): PackStats {
  let positions = 0, realTokens = 0, countedTokens = 0, rows = 0;
  for (const b of batches) {
    positions += b.batch * b.seq;
    realTokens += b.realTokens;
    countedTokens += b.countedTokens;
    rows += b.batch;
  }
  return { batches: batches.length, rows, positions, realTokens, countedTokens, paddingFraction: positions ? 1 - realTokens / positions : 0 };
}
