// The site agent's own parts: the privacy policy it enforces, the update it builds, and the
// external-command trainer's file contract (run with a real child process).
import { describe, it, expect } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkPolicy } from '../../site-agent/agent/policy.ts';
import { SitePolicySchema } from '../../site-agent/config.ts';
import { buildUpdateTensors, assertFinite } from '../../site-agent/agent/update-payload.ts';
import { l2norm } from '../../shared/tensors.ts';
import { CommandTrainer } from '../../site-agent/agent/trainers.ts';
import { loadSiteConfig, parseSiteConfig } from '../../site-agent/config.ts';
import { parseDataConfig } from '../../site-agent/data/index.ts';
import type { AdapterWeights } from '../../shared/lora/types.ts';
import { LORA, siteFixture } from './site-fixture.ts';

const view = { dpEnabled: true, epsilonAfterRound: 2, secureAggregation: false, minSites: 3, selectedSites: 3 };

describe('site policy', () => {
  it('accepts a task within every limit', () => {
    expect(checkPolicy(SitePolicySchema.parse({ max_epsilon: 4, min_sites_per_aggregation: 3 }), view)).toEqual({ ok: true });
  });
  it('declines a round that may aggregate too few sites, naming the policy field', () => {
    const d = checkPolicy(SitePolicySchema.parse({ min_sites_per_aggregation: 5 }), view);
    expect(d.ok).toBe(false);
    expect(!d.ok && d.reason).toMatch(/min_sites_per_aggregation/);
  });
  it('declines when epsilon after the round exceeds the site maximum, and a job without DP when a maximum is set', () => {
    const d = checkPolicy(SitePolicySchema.parse({ max_epsilon: 1 }), view);
    expect(!d.ok && d.code).toBe('FEDLORA_ERR_PRIVACY_BUDGET');
    const noDp = checkPolicy(SitePolicySchema.parse({ max_epsilon: 100 }), { ...view, dpEnabled: false });
    expect(!noDp.ok && noDp.reason).toMatch(/unbounded/);
  });
  it('declines when secure aggregation or DP is required and absent', () => {
    expect(checkPolicy(SitePolicySchema.parse({ require_secure_aggregation: true }), view).ok).toBe(false);
    expect(checkPolicy(SitePolicySchema.parse({ require_dp: true }), { ...view, dpEnabled: false }).ok).toBe(false);
  });
});

describe('site config', () => {
  it('points at the bad field', () => {
    expect(() => parseSiteConfig({ model: { path: '/m' }, policy: { max_epsilon: 'lots' } }, 'site.yaml')).toThrow(/site\.yaml: policy\.max_epsilon/);
    expect(() => parseSiteConfig({ model: {} }, 'site.yaml')).toThrow(/site\.yaml: model\.path/);
    expect(() => parseSiteConfig({ model: { path: '/m' }, surprise: 1 }, 'site.yaml')).toThrow(/surprise/);
  });
  it('names the line of the bad field in site.yaml, and the data section\'s fields under data.', () => {
    const dir = mkdtempSync(join(tmpdir(), 'fedlora-site-config-'));
    writeFileSync(join(dir, 'site.yaml'), 'model:\n  path: /m\npolicy:\n  max_epsilon: lots\n');
    try {
      expect(() => loadSiteConfig(dir)).toThrow(/site\.yaml:4: policy\.max_epsilon/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    expect(() => parseDataConfig({ split: { seed: 'x' } }, 'site.yaml')).toThrow(/site\.yaml: data\.split\.seed/);
  });
});

function adapter(b: number[]): AdapterWeights {
  return new Map([
    ['base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight', { shape: [1, 2], data: Float32Array.from([0.5, -0.5]) }],
    ['base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight', { shape: [2, 1], data: Float32Array.from(b) }],
  ]);
}

describe('update payload', () => {
  it('is local minus global, only B with a frozen A, and its norm is over all tensors', () => {
    const g = adapter([0, 0]);
    const l = adapter([3, 4]);
    l.get('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight')!.data[0] = 1.5;
    const all = buildUpdateTensors(g, l, 'delta', false);
    expect([...all.get('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight')!.data]).toEqual([1, 0]);
    expect(l2norm([...all.values()].map((t) => t.data))).toBeCloseTo(Math.sqrt(1 + 9 + 16), 6);
    const onlyB = buildUpdateTensors(g, l, 'delta', true);
    expect([...onlyB.keys()]).toEqual(['base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight']);
    expect(l2norm([...onlyB.values()].map((t) => t.data))).toBeCloseTo(5, 6);
  });
  it('refuses to send NaN, naming the tensor and element', () => {
    expect(() => assertFinite(adapter([1, NaN]), 'round 3')).toThrow(/FEDLORA_ERR|lora_B\.weight\[1\] is NaN/);
  });
});

describe('external-command trainer', () => {
  it('runs the command with job.json and reads the adapter and metrics it writes', async () => {
    const w = mkdtempSync(join(tmpdir(), 'fedlora-cmd-'));
    const script = join(w, 'trainer.mjs');
    // A stand-in for a site's own PyTorch trainer: reads the job, adds 1 to every B value.
    writeFileSync(
      script,
      `import { readFileSync, mkdirSync, copyFileSync, writeFileSync } from 'node:fs';
       import { join } from 'node:path';
       const job = JSON.parse(readFileSync(process.env.FEDLORA_JOB, 'utf8'));
       const out = join(job.out_dir, 'adapter'); mkdirSync(out, { recursive: true });
       copyFileSync(join(job.global_adapter_dir, 'adapter_config.json'), join(out, 'adapter_config.json'));
       const buf = readFileSync(join(job.global_adapter_dir, 'adapter_model.safetensors'));
       const n = Number(buf.readBigUInt64LE(0)); const h = JSON.parse(buf.subarray(8, 8 + n).toString());
       for (const [k, v] of Object.entries(h)) if (k.includes('lora_B')) for (let o = v.data_offsets[0]; o < v.data_offsets[1]; o += 4) buf.writeFloatLE(buf.readFloatLE(8 + n + o) + 1, 8 + n + o);
       writeFileSync(join(out, 'adapter_model.safetensors'), buf);
       const bits = { int4: 4, int8: 8 }[job.quantize] ?? 32; // the site's model.quantize, honoured
       writeFileSync(join(job.out_dir, 'metrics.json'), JSON.stringify({ num_examples: 42, loss: [2, 1.5], tokens_per_s: 99, saw_steps: job.train.steps, weight_bits: bits, peak_rss_bytes: 123456789 }));`,
    );
    const t = new CommandTrainer([process.execPath, script], 60);
    const r = await t.train({
      workDir: join(w, 'work'), modelDir: '/nonexistent', baseModelId: 'm', device: 'cpu', quantize: 'int4',
      lora: { r: 1, alpha: 2, targets: ['q_proj'], dropout: 0, useRslora: false, freezeA: false, initSeed: 0 },
      train: { steps: 7, epochs: 0, learningRate: 1e-3, optimizer: 'adamw', batchTokens: 64, seed: 1, proxMu: 0, weightDecay: 0, warmupSteps: 0, maxGradNorm: 1 },
      initAdapter: adapter([0.25, -0.25]), trainFile: join(w, 'train.jsonl'), maxSeqLen: 64,
    });
    expect(r.numExamples).toBe(42);
    expect(r.lossPerStep).toEqual([2, 1.5]);
    expect([...r.adapter.get('base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight')!.data]).toEqual([1.25, 0.75]);
    // the weight mode went to the trainer in job.json and comes back with its metrics
    expect(JSON.parse(readFileSync(join(w, 'work', 'job.json'), 'utf8')).quantize).toBe('int4');
    expect(r.weightBits).toBe(4);
    expect(r.peakRssBytes).toBe(123456789);
  });

  it('refuses a weight_bits in metrics.json that is no weight precision, naming the field', async () => {
    const w = mkdtempSync(join(tmpdir(), 'fedlora-cmd-'));
    const script = `const fs=require('fs');const j=JSON.parse(fs.readFileSync(process.env.FEDLORA_JOB,'utf8'));const o=j.out_dir+'/adapter';
      fs.cpSync(j.global_adapter_dir,o,{recursive:true});fs.writeFileSync(j.out_dir+'/metrics.json','{"num_examples":1,"weight_bits":5}')`;
    const t = new CommandTrainer([process.execPath, '-e', script], 60);
    await expect(
      t.train({
        workDir: w, modelDir: '/m', baseModelId: 'm', device: 'cpu',
        lora: { r: 1, alpha: 2, targets: ['q_proj'], dropout: 0, useRslora: false, freezeA: false, initSeed: 0 },
        train: { steps: 1, epochs: 0, learningRate: 1e-3, optimizer: 'adamw', batchTokens: 64, seed: 1, proxMu: 0, weightDecay: 0, warmupSteps: 0, maxGradNorm: 1 },
        initAdapter: adapter([0.5, 0.5]), trainFile: join(w, 't.jsonl'), maxSeqLen: 64,
      }),
    ).rejects.toThrow(/metrics\.json: weight_bits/);
  });

  it('reports a failing command with its exit code', async () => {
    const w = mkdtempSync(join(tmpdir(), 'fedlora-cmd-'));
    const t = new CommandTrainer([process.execPath, '-e', 'process.exit(3)'], 60);
    await expect(
      t.train({
        workDir: w, modelDir: '/m', baseModelId: 'm', device: 'cpu',
        lora: { r: 1, alpha: 2, targets: ['q_proj'], dropout: 0, useRslora: false, freezeA: false, initSeed: 0 },
        train: { steps: 1, epochs: 0, learningRate: 1e-3, optimizer: 'adamw', batchTokens: 64, seed: 1, proxMu: 0, weightDecay: 0, warmupSteps: 0, maxGradNorm: 1 },
        initAdapter: null, trainFile: join(w, 't.jsonl'), maxSeqLen: 64,
      }),
    ).rejects.toThrow(/exited with 3/);
  });
});

describe('exact match of a generated diagnosis', () => {
  it('ignores the label, case, punctuation and spacing, and only the first line counts', async () => {
    const { normalizeDiagnosis } = await import('../../site-agent/agent/evaluation.ts');
    expect(normalizeDiagnosis('Diagnosis: Atrial fibrillation.\nReasoning: ...')).toBe(normalizeDiagnosis('atrial  fibrillation'));
    expect(normalizeDiagnosis('诊断：急性心肌梗死\n诊断依据：…')).toBe(normalizeDiagnosis('急性心肌梗死'));
    expect(normalizeDiagnosis('Diagnosis: Pneumonia')).not.toBe(normalizeDiagnosis('Atrial fibrillation'));
  });
});

describe('built-in evaluator', () => {
  it("scores with the base weights in the site's model.quantize (int8: near the float32 loss, not equal)", async () => {
    const f = await siteFixture();
    try {
      const loss = async () => (await f.deps().workspace.evaluate(null, LORA)).find((m) => m.name === 'loss' && !m.subset)!.value;
      const float32 = await loss();
      f.config.model.quantize = 'int8';
      const int8 = await loss();
      expect(Number.isFinite(float32)).toBe(true);
      expect(int8).not.toBe(float32);
      expect(Math.abs(int8 - float32)).toBeLessThan(0.02 * float32);
    } finally {
      f.cleanup();
    }
  });
});
