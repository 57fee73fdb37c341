// The privacy and aggregation modes in the real federation (separate processes, mutual-TLS
// gRPC): the demo switched into svd re-compression, and into FFA with DP and secure aggregation.
import { describe, it, expect } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runDemo, DEMO_DEFAULTS } from '../../cli/demo/run-demo.ts';
import { decodeSafetensorsF32 } from '../../shared/safetensors.ts';

const quick = { ...DEMO_DEFAULTS, sites: 2, rounds: 1, records: 50, localSteps: 2, crossEval: false };

async function adapterOf(httpUrl: string, job: string, v: number) {
  const bytes = Buffer.from(await (await fetch(`${httpUrl}/api/jobs/${job}/adapters/${v}/adapter_model.safetensors`)).arrayBuffer());
  return decodeSafetensorsF32(bytes).tensors;
}

describe('demo modes', () => {
  it('svd: publishes a rank-r re-compression of the sites\' B·A products', async () => {
    const d = await runDemo({ ...quick, aggregation: 'svd', out: join(mkdtempSync(join(tmpdir(), 'fedlora-svd-')), 'o'), log: () => {} });
    try {
      const r = d.report.rounds[0];
      expect(r.adapter?.strategy).toBe('svd');
      expect(r.adapter?.contributing_sites).toBe(2);
      const t = await adapterOf(d.httpUrl, d.jobId, 1);
      const a = t.get('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight')!;
      expect(a.shape[0]).toBe(8); // rank kept at r
      expect([...t.values()].every((x) => x.data.every(Number.isFinite))).toBe(true);
    } finally {
      await d.stop();
    }
  }, 400_000);

  it('ffa + DP + secure aggregation: A stays at the shared initialisation, only the sum is seen', async () => {
    const d = await runDemo({
      ...quick, aggregation: 'ffa', freezeA: true, secureAggregation: true,
      dp: { clipNorm: 0.5, noiseMultiplier: 0.3, budget: 1000 },
      out: join(mkdtempSync(join(tmpdir(), 'fedlora-ffa-')), 'o'), log: () => {},
    });
    try {
      const r = d.report.rounds[0];
      expect(r.adapter?.contributing_sites).toBe(2);
      const v0 = await adapterOf(d.httpUrl, d.jobId, 0);
      const v1 = await adapterOf(d.httpUrl, d.jobId, 1);
      let bMoved = false;
      for (const [k, t] of v1) {
        if (k.includes('lora_A')) expect([...t.data]).toEqual([...v0.get(k)!.data]);
        else if (t.data.some((x, i) => x !== v0.get(k)!.data[i])) bMoved = true;
      }
      expect(bMoved).toBe(true);
      // the coordinator kept no per-site update
      const rounds = (await (await fetch(`${d.httpUrl}/api/jobs/${d.jobId}/rounds`)).json()) as { rounds: { updates: unknown[] }[] };
      expect(rounds.rounds.every((x) => x.updates.length === 0)).toBe(true);
      const priv = (await (await fetch(`${d.httpUrl}/api/jobs/${d.jobId}/privacy`)).json()) as Record<string, unknown>;
      expect(JSON.stringify(priv)).toMatch(/epsilon/);
    } finally {
      await d.stop();
    }
  }, 400_000);
});
