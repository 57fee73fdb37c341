// Figures of held-out text (loss on the assistant turns) and of generated diagnoses (exact match),
// with 95% bootstrap intervals over the items (resample.ts) when the evaluator scored each item.
//   loss        token-weighted mean -log p over all assistant tokens: sum(nll) / sum(tokens) of
//               the items drawn (a resample draws whole items, not tokens); perplexity = exp(loss)
//   exact_match share of generated first lines equal to the diagnosis after normalisation
//   generation_latency_p50_ms / _p95_ms  end-to-end time to the complete generated answer
// Throughput (tokens_per_s, generation_tokens_per_s) is a rate of this machine, not an estimate
// about cases: reported without an interval.
import type { BootstrapOptions } from './resample.ts';
import { estimatedFigures, figureKey as K, weightedQuantiles, type Figure } from './figure.ts';

export interface HeldOutScores {
  loss: number;
  tokens: number;
  seconds: number;
  /** Per item: summed -log p over its counted tokens and their number (absent: no intervals). */
  items?: { nll: number; tokens: number }[];
}

export function heldOutFigures(s: HeldOutScores, bootstrap: BootstrapOptions): Figure[] {
  const rate: Figure = { name: 'tokens_per_s', subset: '', value: s.tokens / s.seconds, count: s.tokens };
  if (!s.items?.length) {
    return [{ name: 'loss', subset: '', value: s.loss, count: s.tokens }, { name: 'perplexity', subset: '', value: Math.exp(s.loss), count: s.tokens }, rate];
  }
  const items = s.items;
  const compute = (w: ArrayLike<number>) => {
    let nll = 0, tok = 0;
    items.forEach((x, i) => {
      nll += w[i] * x.nll;
      tok += w[i] * x.tokens;
    });
    return new Map([[K('loss'), nll / tok], [K('perplexity'), Math.exp(nll / tok)]]);
  };
  // The value is the evaluator's own loss (its order of addition); the items give the interval.
  const own = new Map([['loss', s.loss], ['perplexity', Math.exp(s.loss)]]);
  const figs = estimatedFigures(items.length, compute, bootstrap, () => s.tokens, () => true).map((f) => ({ ...f, value: own.get(f.name) ?? f.value }));
  return [...figs, rate];
}

export interface GenerationScores {
  hits: boolean[];
  newTokens: number;
  seconds: number;
  /** Seconds to each complete answer (absent: no latency figures). */
  itemSeconds?: number[];
}

export function generationFigures(s: GenerationScores, bootstrap: BootstrapOptions): Figure[] {
  const n = s.hits.length;
  const ms = s.itemSeconds?.length === n ? Float64Array.from(s.itemSeconds, (x) => x * 1000) : null;
  const compute = (w: ArrayLike<number>) => {
    let hit = 0, total = 0;
    for (let i = 0; i < n; i++) {
      total += w[i];
      if (s.hits[i]) hit += w[i];
    }
    const out = new Map([[K('exact_match'), hit / total]]);
    if (ms) {
      const [p50, p95] = weightedQuantiles(ms, w, [0.5, 0.95]);
      out.set(K('generation_latency_p50_ms'), p50);
      out.set(K('generation_latency_p95_ms'), p95);
    }
    return out;
  };
  const figs = estimatedFigures(n, compute, bootstrap, () => n, () => true);
  return [...figs, { name: 'generation_tokens_per_s', subset: '', value: s.newTokens / Math.max(s.seconds, 1e-9), count: s.newTokens }];
}
