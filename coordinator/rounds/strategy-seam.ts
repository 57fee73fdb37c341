// The ONE place the coordinator reaches C2's strategies (coordinator/strategies/**). The
// registry module is looked up at run time so this file stays type-clean while it lands;
// without it, a built-in weighted FedAvg (the textbook rule, streaming, O(adapter) memory)
// serves name 'fedavg' and every other name is refused.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { fail } from '../../shared/errors.ts';
import type { Strategy, UpdateRef, RoundContext, AggregateResult } from '../strategies/types.ts';
import type { JobSpec } from '../jobs/spec.ts';

const REGISTRY_CANDIDATES = ['../strategies/registry.ts', '../strategies/index.ts'];

type CreateStrategy = (spec: unknown, opts?: { dp?: unknown; expectedSites?: number; source?: string }) => Strategy | Promise<Strategy>;

let registry: CreateStrategy | null | undefined;

async function loadRegistry(): Promise<CreateStrategy | null> {
  if (registry !== undefined) return registry;
  registry = null;
  for (const rel of REGISTRY_CANDIDATES) {
    const url = new URL(rel, import.meta.url);
    if (!existsSync(fileURLToPath(url))) continue;
    const mod = (await import(url.href)) as { createStrategy?: CreateStrategy };
    if (typeof mod.createStrategy === 'function') {
      registry = mod.createStrategy;
      break;
    }
  }
  return registry;
}

/** Weighted FedAvg over deltas: global + sum(n_i * delta_i) / sum(n_i). */
export const builtinFedAvg: Strategy = {
  name: 'fedavg',
  payloadKind: 'delta',
  configureRound: () => ({}),
  async aggregate(updates: UpdateRef[], ctx: RoundContext): Promise<AggregateResult> {
    const total = updates.reduce((a, u) => a + u.numExamples, 0);
    if (updates.length === 0 || total <= 0) throw fail('FEDLORA_ERR_AGGREGATION', `round ${ctx.round}: no updates with examples to aggregate`);
    const acc = new Float64Array(ctx.layout.total);
    for (const u of updates) {
      const d = await u.load();
      const w = u.numExamples / total;
      for (let i = 0; i < d.length; i++) acc[i] += w * d[i];
    }
    const global = new Float32Array(ctx.global.length);
    for (let i = 0; i < global.length; i++) global[i] = ctx.global[i] + acc[i];
    return { global, state: ctx.state, metrics: { updates: updates.length, examples: total } };
  },
};

/** The strategy for a job: C2's registry (spec.aggregation plus the job's privacy block),
 *  else the built-in FedAvg. */
export async function strategyFor(spec: JobSpec): Promise<Strategy> {
  const create = await loadRegistry();
  if (create) {
    if (spec.aggregation.name === 'ffa' && spec.lora.freeze_a) {
      // The coordinator's update layout already holds only the B tensors (A is frozen and never
      // sent), so FFA's exact aggregation is the (DP-wrapped) weighted mean over that layout.
      const inner = await create({ ...spec.aggregation, name: 'fedavg' }, { dp: spec.privacy.dp, expectedSites: spec.max_sites, source: 'aggregation' });
      return Object.assign(Object.create(Object.getPrototypeOf(inner)), inner, { name: 'ffa' }) as Strategy;
    }
    return await create(spec.aggregation, { dp: spec.privacy.dp, expectedSites: spec.max_sites, source: 'aggregation' });
  }
  if (spec.aggregation.name !== 'fedavg') {
    throw fail('FEDLORA_ERR_JOB_INVALID', `aggregation.name: strategy "${spec.aggregation.name}" is not available in this build (only fedavg)`);
  }
  if (spec.privacy.dp) throw fail('FEDLORA_ERR_JOB_INVALID', 'privacy.dp: the differential-privacy wrapper is not available in this build');
  return builtinFedAvg;
}

// Strategy state survives restarts as JSON: Float32Arrays as base64.
export function encodeState(state: Record<string, Float32Array | number>): string {
  const o: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(state)) o[k] = typeof v === 'number' ? v : { f32: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64') };
  return JSON.stringify(o);
}

export function decodeState(text: string | null): Record<string, Float32Array | number> {
  if (!text) return {};
  const o = JSON.parse(text) as Record<string, number | { f32: string }>;
  const out: Record<string, Float32Array | number> = {};
  for (const [k, v] of Object.entries(o)) {
    if (typeof v === 'number') out[k] = v;
    else {
      const b = Buffer.from(v.f32, 'base64');
      out[k] = new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
    }
  }
  return out;
}
