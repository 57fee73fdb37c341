// createStrategy(spec): builds a strategy from a job's `aggregation` section (validated with
// zod; errors name the field, e.g. "aggregation.beta: ..."), wrapped in DP-FedAvg when the job
// has privacy.dp. Spec format (snake_case, as in job YAML):
//   { name: 'fedavg', weighting?: 'examples'|'uniform', weight_cap? }
//   { name: 'fedprox', mu, weight_cap? }
//   { name: 'fedadam'|'fedyogi'|'fedadagrad', eta?, beta1?, beta2?, tau?, weight_cap? }
//   { name: 'median' } | { name: 'trimmed_mean', beta } | { name: 'norm_bound', max_norm, weight_cap? }
//   { name: 'multi_krum', f, m? }
//   { name: 'fedit', payload?: 'delta'|'weights', weight_cap? } | { name: 'ffa', weight_cap? } | { name: 'svd', weight_cap? }
// plus, for DP jobs, optional `dp: { weighting?: 'uniform'|'capped', weight_cap?, expected_weight?,
//   target_quantile?, clip_learning_rate?, bit_noise_std? }` inside the aggregation section.
import { z } from 'zod';
import { fail } from '../../shared/errors.ts';
import { describeZodError } from '../../shared/zod-errors.ts';
import type { Strategy } from './types.ts';
import { createFedAvg, createFedProx } from './fedavg.ts';
import { createFedOpt } from './fedopt.ts';
import { createMedian, createMultiKrum, createNormBound, createTrimmedMean } from './robust.ts';
import { createFedIt } from './lora-fedit.ts';
import { createFfa } from './lora-ffa.ts';
import { createLoraSvd } from './lora-svd.ts';
import { createDpStrategy } from './dp.ts';
import { everyOnline, seededOnlineSubset } from './selection.ts';

const cap = z.number().positive().optional();
const dpExtra = z.object({
  weighting: z.enum(['uniform', 'capped']).default('uniform'),
  weight_cap: z.number().positive().optional(),
  expected_weight: z.number().positive().max(1).default(1),
  target_quantile: z.number().min(0).max(1).default(0.5),
  clip_learning_rate: z.number().positive().default(0.2),
  bit_noise_std: z.number().positive().optional(),
}).strict().optional();
const fedopt = (name: 'fedadam' | 'fedyogi' | 'fedadagrad', eta: number, tau: number) => z.object({
  name: z.literal(name),
  eta: z.number().positive().default(eta),
  beta1: z.number().min(0).max(1).default(0.9),
  beta2: z.number().min(0).max(1).default(0.99),
  tau: z.number().positive().default(tau),
  weight_cap: cap,
  dp: dpExtra,
}).strict();

export const AggregationSpecSchema = z.discriminatedUnion('name', [
  z.object({ name: z.literal('fedavg'), weighting: z.enum(['examples', 'uniform']).default('examples'), weight_cap: cap, dp: dpExtra }).strict(),
  z.object({ name: z.literal('fedprox'), mu: z.number().min(0), weight_cap: cap, dp: dpExtra }).strict(),
  fedopt('fedadam', 0.1, 1e-9),
  fedopt('fedyogi', 0.01, 1e-3),
  fedopt('fedadagrad', 0.1, 1e-9),
  z.object({ name: z.literal('median') }).strict(),
  z.object({ name: z.literal('trimmed_mean'), beta: z.number().min(0).lt(0.5) }).strict(),
  z.object({ name: z.literal('norm_bound'), max_norm: z.number().positive(), weight_cap: cap }).strict(),
  z.object({ name: z.literal('multi_krum'), f: z.number().int().min(0), m: z.number().int().min(1).optional() }).strict(),
  z.object({ name: z.literal('fedit'), payload: z.enum(['delta', 'weights']).default('delta'), weight_cap: cap, dp: dpExtra }).strict(),
  z.object({ name: z.literal('ffa'), weight_cap: cap, dp: dpExtra }).strict(),
  z.object({ name: z.literal('svd'), weight_cap: cap }).strict(),
]);
export type AggregationSpec = z.infer<typeof AggregationSpecSchema>;

/** The job's privacy.dp section (coordinator/jobs/spec.ts). */
export interface JobDpSettings {
  clip_norm: number;
  noise_multiplier: number;
  delta: number;
  epsilon_budget: number;
  sample_rate: number;
  adaptive_clipping: boolean;
}

export interface CreateStrategyOptions {
  dp?: JobDpSettings;
  /** Expected number of sites per round (for the default adaptive-clipping bit noise, /20). */
  expectedSites?: number;
  /** The job's max_sites: at most this many online sites per round, by the round's public seed
   *  (absent: every online candidate). */
  maxSites?: number;
  /** N, the job's eligible sites, fixed at submission: with privacy.dp.sample_rate q < 1 every
   *  round Poisson-samples them (DP wrapper) and divides by q x N. */
  population?: number;
  /** Reproducible DP noise from the round seed — tests only (see privacy/gaussian.ts). */
  deterministicNoise?: boolean;
  /** Name of the spec's source in error messages (default 'aggregation'). */
  source?: string;
}

export function parseAggregationSpec(raw: unknown, source = 'aggregation'): AggregationSpec {
  const r = AggregationSpecSchema.safeParse(raw ?? { name: 'fedavg' });
  if (!r.success) {
    const known = ['fedavg', 'fedprox', 'fedadam', 'fedyogi', 'fedadagrad', 'median', 'trimmed_mean', 'norm_bound', 'multi_krum', 'fedit', 'ffa', 'svd'];
    const name = (raw as { name?: unknown })?.name;
    if (typeof name !== 'string' || !known.includes(name)) throw fail('FEDLORA_ERR_JOB_INVALID', `${source}.name: unknown strategy ${JSON.stringify(name)} (one of ${known.join(', ')})`);
    const msg = describeZodError(source, r.error);
    throw fail('FEDLORA_ERR_JOB_INVALID', msg.includes(`${source}: (root): `) ? msg.replace(`${source}: (root): `, `${source}: `) : msg.replace(`${source}: `, `${source}.`));
  }
  return r.data;
}

export function createStrategy(raw: unknown, opts: CreateStrategyOptions = {}): Strategy {
  const s = parseAggregationSpec(raw, opts.source);
  const select = opts.maxSites === undefined ? everyOnline : seededOnlineSubset(opts.maxSites);
  let st: Strategy;
  switch (s.name) {
    case 'fedavg': st = createFedAvg({ weighting: s.weighting, weightCap: s.weight_cap, select }); break;
    case 'fedprox': st = createFedProx({ mu: s.mu, weightCap: s.weight_cap, select }); break;
    case 'fedadam': case 'fedyogi': case 'fedadagrad':
      st = createFedOpt(s.name, { eta: s.eta, beta1: s.beta1, beta2: s.beta2, tau: s.tau, weightCap: s.weight_cap, select }); break;
    case 'median': st = createMedian(select); break;
    case 'trimmed_mean': st = createTrimmedMean(s.beta, select); break;
    case 'norm_bound': st = createNormBound(s.max_norm, s.weight_cap, select); break;
    case 'multi_krum': st = createMultiKrum(s.f, s.m, select); break;
    case 'fedit': st = createFedIt({ payloadKind: s.payload, weightCap: s.weight_cap, select }); break;
    case 'ffa': st = createFfa({ weightCap: s.weight_cap, select }); break;
    case 'svd': st = createLoraSvd({ weightCap: s.weight_cap, select }); break;
  }
  if (!opts.dp) return st;
  const extra = 'dp' in s ? s.dp : undefined;
  if (extra?.weighting === 'capped' && !extra.weight_cap) throw fail('FEDLORA_ERR_JOB_INVALID', `${opts.source ?? 'aggregation'}.dp.weight_cap: required when dp.weighting is 'capped'`);
  try {
    return createDpStrategy(st, {
      clipNorm: opts.dp.clip_norm,
      noiseMultiplier: opts.dp.noise_multiplier,
      weighting: extra?.weighting,
      weightCap: extra?.weight_cap,
      expectedWeight: extra?.expected_weight,
      deterministicNoise: opts.deterministicNoise,
      ...(opts.dp.sample_rate < 1 ? { sampling: { rate: opts.dp.sample_rate, population: opts.population ?? 0 } } : {}),
      adaptive: opts.dp.adaptive_clipping ? {
        targetQuantile: extra?.target_quantile ?? 0.5,
        learningRate: extra?.clip_learning_rate ?? 0.2,
        // paper default sigma_b = m / 20 assumes ~100+ sites; with few hospitals that would force
        // z < m / 10, so the default is raised to z when needed (z_delta = 1.155 z then)
        bitNoiseStd: extra?.bit_noise_std ?? Math.max(Math.max(1, opts.expectedSites ?? 1) / 20, opts.dp.noise_multiplier),
      } : undefined,
    });
  } catch (e) {
    if ((e as { code?: string }).code === 'FEDLORA_ERR_CONFIG') throw fail('FEDLORA_ERR_JOB_INVALID', `privacy.dp with aggregation ${s.name}: ${(e as Error).message}`);
    throw e;
  }
}
