// Exposure of planted canaries on a model (Carlini et al., "The Secret Sharer", USENIX Security
// 2019): the canary's log-likelihood is ranked among other fillings of its format, and
// exposure = log2(#candidates) − log2(rank). A model that never saw the canary ranks it
// uniformly at random (expected exposure log2(e) ≈ 1.44 bits); one that memorised it ranks it
// first (exposure log2(#candidates)).
//
// Scoring: log p(filled format | context + the format's text before its first '#'), i.e. the
// summed log-probabilities of the tokens after that prefix; the context (optional, per canary) is
// the text that preceded the canary where it was planted, so the model is asked in the setting it
// learned from (a canary and all its candidates get the same context). A candidate space up to `exhaustiveUpTo`
// is enumerated (exact rank); a larger one is sampled uniformly (`samples` candidates) and the
// rank estimated as 1 + better·(N−1)/samples, which cannot resolve exposures above about
// log2(samples): such estimates are flagged `at_resolution_limit`.

import { fail } from '../../shared/errors.ts';
import { Rng } from '../../shared/prng.ts';
import { candidateSpace, fillCanary, parseCanaryFormat, randomSecret } from '../../site-agent/data/synth/canaries.ts';
import type { LoadedModel } from '../../site-agent/engine/index.ts';

export interface ExposureOptions {
  format: string;
  /** The canaries' secrets (the digits that fill the format). */
  secrets: string[];
  /** Text before each canary (same order as secrets); none = the format's prefix alone. */
  contexts?: string[];
  /** Enumerate every candidate when the space holds at most this many (default 10^4). */
  exhaustiveUpTo?: number;
  /** Candidates sampled per canary when the space is larger (default 4096). */
  samples?: number;
  seed?: number;
  /** Sequences per engine run. */
  batch?: number;
}

export interface CanaryExposure {
  text: string;
  secret: string;
  /** Summed log-probability (nats) of the canary's tokens after the format's prefix. */
  log_likelihood: number;
  /** 1 + candidates scored strictly higher (estimated when sampled). */
  rank: number;
  exposure: number;
  /** True when the rank is estimated from sampled candidates and none scored higher. */
  at_resolution_limit: boolean;
}

export interface ExposureResult {
  candidate_space: number;
  /** 'exhaustive' (every filling scored) or 'sampled' (uniform candidates, rank estimated). */
  method: 'exhaustive' | 'sampled';
  candidates_scored: number;
  canaries: CanaryExposure[];
  mean_exposure: number;
}

/** Log-likelihood of each secret's filling of the format, after the format's fixed prefix. */
async function scoreSecrets(model: LoadedModel, format: string, context: string, secrets: string[], batch: number): Promise<Float64Array> {
  const f = parseCanaryFormat(format);
  const prefix = context + format.slice(0, format.indexOf('#'));
  const prefixIds = model.encode(prefix);
  // The filled text is tokenised whole; the score covers the tokens past the prefix's.
  const seqs = secrets.map((s) => model.encode(context + fillCanary(f, s)));
  for (const [i, ids] of seqs.entries()) {
    if (ids.length <= prefixIds.length || prefixIds.some((t, k) => ids[k] !== t)) {
      throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `canary format "${format}": the tokenizer does not keep the prefix "${prefix}" intact before "${secrets[i]}"; put a space or punctuation before the '#' digits`);
    }
  }
  const out = new Float64Array(secrets.length);
  const chunk = 4096;
  for (let start = 0; start < seqs.length; start += chunk) {
    const part = seqs.slice(start, start + chunk);
    const lps = await model.scoreBatch(part, { batch });
    lps.forEach((lp, i) => {
      let sum = 0;
      for (let t = prefixIds.length; t < part[i].length; t++) sum += lp[t];
      out[start + i] = sum;
    });
  }
  return out;
}

const allSecrets = (digits: number): string[] => Array.from({ length: 10 ** digits }, (_, i) => String(i).padStart(digits, '0'));

/** Exposure of every canary on `model` (see the file comment). */
export async function measureExposure(model: LoadedModel, o: ExposureOptions): Promise<ExposureResult> {
  const f = parseCanaryFormat(o.format);
  const N = candidateSpace(f);
  const batch = o.batch ?? 64;
  const contexts = o.secrets.map((_, k) => o.contexts?.[k] ?? '');
  if (o.contexts && o.contexts.length !== o.secrets.length) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `exposure: ${o.contexts.length} contexts for ${o.secrets.length} canaries`);
  const exhaustive = N <= (o.exhaustiveUpTo ?? 10_000);
  const pool = exhaustive ? allSecrets(f.digits) : samplePool(o, f);
  // candidates scored once per distinct context
  const byContext = new Map<string, Float64Array>();
  for (const c of new Set(contexts)) byContext.set(c, await scoreSecrets(model, o.format, c, pool, batch));
  const canaries: CanaryExposure[] = [];
  for (const [k, secret] of o.secrets.entries()) {
    const ctx = contexts[k];
    const lls = byContext.get(ctx)!;
    // exhaustive: the canary's own score is the pool's (same engine run shapes as its rivals)
    const own = exhaustive ? lls[Number(secret)] : (await scoreSecrets(model, o.format, ctx, [secret], batch))[0];
    let better = 0;
    for (let i = 0; i < pool.length; i++) if (pool[i] !== secret && lls[i] > own) better++;
    const rest = exhaustive ? N - 1 : pool.length;
    const rank = exhaustive ? 1 + better : 1 + (better * (N - 1)) / rest;
    canaries.push({
      text: fillCanary(f, secret), secret, log_likelihood: own, rank,
      exposure: Math.log2(N) - Math.log2(rank), at_resolution_limit: !exhaustive && better === 0,
    });
  }
  const mean = canaries.reduce((s, c) => s + c.exposure, 0) / Math.max(1, canaries.length);
  return { candidate_space: N, method: exhaustive ? 'exhaustive' : 'sampled', candidates_scored: pool.length, canaries, mean_exposure: mean };
}

/** Uniform candidates of the format other than the canaries (with replacement). */
function samplePool(o: ExposureOptions, f: ReturnType<typeof parseCanaryFormat>): string[] {
  const S = o.samples ?? 4096;
  if (!Number.isInteger(S) || S < 1) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `exposure: samples must be an integer >= 1, got ${S}`);
  const rng = Rng.derive(o.seed ?? 1, 'exposure candidates', o.format);
  const secrets = new Set(o.secrets);
  const pool: string[] = [];
  while (pool.length < S) {
    const s = randomSecret(f, rng);
    if (!secrets.has(s)) pool.push(s);
  }
  return pool;
}
