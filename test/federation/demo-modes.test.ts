// The privacy and aggregation modes in the real federation (separate processes, mutual-TLS
// gRPC): the demo switched into svd re-compression, into FFA with DP and secure aggregation, and
// into DP-FedAvg with Poisson sampling of the hospitals (--sample-rate).
import { describe, it, expect } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runDemo, DEMO_DEFAULTS, DEMO_LORA_RANK } from '../../cli/demo/run-demo.ts';
import { decodeSafetensorsF32 } from '../../shared/safetensors.ts';
import { computeEpsilon } from '../../coordinator/privacy/rdp.ts';
import { TEST_TIMEOUT_MS } from '../runner/limits.ts';

const quick = { ...DEMO_DEFAULTS, sites: 2, rounds: 1, records: 50, localSteps: 2, learningRate: 0.01, skew: 0.8, smallSite: 30, crossEval: false, sharedPerDiagnosis: 0, personalSteps: 0 };

const auth = (d: { adminToken: string }) => ({ headers: { authorization: `Bearer ${d.adminToken}` } });

async function adapterOf(d: { httpUrl: string; jobId: string; adminToken: string }, v: number) {
  const bytes = Buffer.from(await (await fetch(`${d.httpUrl}/api/jobs/${d.jobId}/adapters/${v}/adapter_model.safetensors`, auth(d))).arrayBuffer());
  return decodeSafetensorsF32(bytes).tensors;
}

describe('demo modes', () => {
  it('svd: publishes a rank-r re-compression of the sites\' B·A products', async () => {
    const d = await runDemo({ ...quick, aggregation: 'svd', out: join(mkdtempSync(join(tmpdir(), 'fedlora-svd-')), 'o'), log: () => {} });
    try {
      const r = d.report.rounds[0];
      expect(r.adapter?.strategy).toBe('svd');
      expect(r.adapter?.contributing_sites).toBe(2);
      const t = await adapterOf(d, 1);
      const a = t.get('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight')!;
      expect(a.shape[0]).toBe(DEMO_LORA_RANK); // rank kept at r
      expect([...t.values()].every((x) => x.data.every(Number.isFinite))).toBe(true);
    } finally {
      await d.stop();
    }
  }, 3.5 * TEST_TIMEOUT_MS);

  it('ffa + DP + secure aggregation: A stays at the shared initialisation, only the sum is seen', async () => {
    const d = await runDemo({
      ...quick, aggregation: 'ffa', freezeA: true, secureAggregation: true,
      dp: { clipNorm: 0.5, noiseMultiplier: 0.3, budget: 1000 },
      out: join(mkdtempSync(join(tmpdir(), 'fedlora-ffa-')), 'o'), log: () => {},
    });
    try {
      const r = d.report.rounds[0];
      expect(r.adapter?.contributing_sites).toBe(2);
      const v0 = await adapterOf(d, 0);
      const v1 = await adapterOf(d, 1);
      let bMoved = false;
      for (const [k, t] of v1) {
        if (k.includes('lora_A')) expect([...t.data]).toEqual([...v0.get(k)!.data]);
        else if (t.data.some((x, i) => x !== v0.get(k)!.data[i])) bMoved = true;
      }
      expect(bMoved).toBe(true);
      // the coordinator kept no per-site update
      const rounds = (await (await fetch(`${d.httpUrl}/api/jobs/${d.jobId}/rounds`, auth(d))).json()) as { rounds: { updates: unknown[] }[] };
      expect(rounds.rounds.every((x) => x.updates.length === 0)).toBe(true);
      const priv = (await (await fetch(`${d.httpUrl}/api/jobs/${d.jobId}/privacy`, auth(d))).json()) as Record<string, unknown>;
      expect(JSON.stringify(priv)).toMatch(/epsilon/);
    } finally {
      await d.stop();
    }
  }, 3.5 * TEST_TIMEOUT_MS);

  it('DP with Poisson sampling: each round\'s sample, its participants and the ledger\'s epsilon in report.json', async () => {
    const dp = { clipNorm: 0.5, noiseMultiplier: 0.8, budget: 1000, sampleRate: 0.5 };
    const d = await runDemo({ ...quick, rounds: 2, dp, out: join(mkdtempSync(join(tmpdir(), 'fedlora-sample-')), 'o'), log: () => {} });
    try {
      const rep = d.report;
      expect(rep.privacy).toEqual({ delta: 1e-5, sample_rate: 0.5, eligible_sites: 2 });
      expect(rep.rounds.map((r) => r.round)).toEqual([1, 2]);
      for (const r of rep.rounds) {
        expect(r.sampled.every((s) => ['hospital-1', 'hospital-2'].includes(s))).toBe(true);
        expect(r.participants.map((p) => p.site).every((s) => r.sampled.includes(s))).toBe(true);
        expect(r.adapter?.contributing_sites).toBe(r.participants.length);
        expect(r.epsilon).toBe(computeEpsilon({ noiseMultiplier: dp.noiseMultiplier, sampleRate: dp.sampleRate, steps: r.round, delta: 1e-5 }).epsilon);
      }
    } finally {
      await d.stop();
    }
  }, 3.5 * TEST_TIMEOUT_MS);
});
