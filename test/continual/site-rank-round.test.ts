// A site whose policy.max_lora_rank is below the job's rank, on one in-process site with real
// parts (tiny model, SQLite site store, the engine's evaluation, the outbox) and a scripted
// coordinator serving a rank-2 global adapter with a non-zero product. The trainer is a stand-in
// that moves every lora_B value by 0.125, so what leaves the site is known exactly:
//   * svd (weights): training starts from the best rank-1 factors of each global B A, with the
//     job's scaling (alpha 4 / r 2 = alpha 2 / r 1); the upload holds rank-1 factors declared in
//     its metadata (lora_r 1); the training report carries train_lora_rank 1;
//   * ffa (frozen A): training starts from A's first row and the B that best keeps the product;
//     the upload is the rank-1 B delta;
//   * below the job's min_site_r the task is declined with the reason, before anything is fetched;
//   * the final EVALUATE task personalises at the site's rank; a cross-evaluation scores a
//     peer's rank-1 local-only adapter with rank-1 settings of the job's scaling.
import { afterEach, describe, expect, it } from 'vitest';
import { TEST_TIMEOUT_MS } from '../runner/limits.ts';
import { TRAIN_ROUND, runTrainRound } from '../../site-agent/agent/train-round.ts';
import { runEvaluateTask } from '../../site-agent/agent/evaluate-task.ts';
import { handleCrossEval } from '../../site-agent/agent/cross-eval.ts';
import { writePeftAdapter } from '../../shared/lora/peft.ts';
import { adapterWeightsAtRank } from '../../shared/lora/rank.ts';
import type { LoraConfig } from '../../shared/lora/types.ts';
import { decodeSafetensorsF32, parseSafetensorsHeader } from '../../shared/safetensors.ts';
import type { AdapterWeights } from '../../shared/lora/types.ts';
import { JOB, shiftingTrainer, siteFixture, type SiteFixture } from '../site-agent/site-fixture.ts';

const fixtures: SiteFixture[] = [];
afterEach(() => fixtures.splice(0).forEach((f) => f.cleanup()));


/** A site allowed rank 1 at most, its coordinator's global B made non-zero (a rank-2 product). */
async function smallSite(): Promise<SiteFixture> {
  const f = await siteFixture({ policy: { min_sites_per_aggregation: 1, allowed_fields: ['department', 'chiefComplaint', 'diagnosis'], max_lora_rank: 1 } });
  fixtures.push(f);
  let s = 1;
  for (const [k, t] of f.coordinator.global) if (k.includes('.lora_B.')) for (let i = 0; i < t.data.length; i++) t.data[i] = Math.sin(s++) * 0.5;
  return f;
}

const modulesOf = (w: AdapterWeights) => [...new Set([...w.keys()].map((k) => k.replace(/\.lora_[AB]\.weight$/, '')))];

/** B A of a module, dense. */
function product(w: AdapterWeights, m: string): { rows: number; cols: number; v: Float64Array } {
  const a = w.get(`${m}.lora_A.weight`)!, b = w.get(`${m}.lora_B.weight`)!;
  const [r, inF] = a.shape, outF = b.shape[0];
  const v = new Float64Array(outF * inF);
  for (let o = 0; o < outF; o++) for (let i = 0; i < inF; i++) for (let j = 0; j < r; j++) v[o * inF + i] += b.data[o * r + j] * a.data[j * inF + i];
  return { rows: outF, cols: inF, v };
}
const dot = (x: Float64Array, y: Float64Array) => x.reduce((s, v, i) => s + v * y[i], 0);

describe('a site training below the job\'s rank', () => {
  it('svd: starts from the best rank-1 factors with the job\'s scaling, sends rank-1 factors declared as lora_r 1, reports its rank', async () => {
    const f = await smallSite();
    const { trainer, requests } = shiftingTrainer(0.125);
    const task = f.task({ aggregation: 'svd', payloadKind: 'weights', lora: { ...f.task().lora, minSiteR: 1 } });
    await runTrainRound(f.deps({ trainer }), task, TRAIN_ROUND);

    expect(requests).toHaveLength(1);
    const req = requests[0];
    expect([req.lora.r, req.lora.alpha]).toEqual([1, 2]);
    const start = req.initAdapter!;
    for (const m of modulesOf(f.coordinator.global)) {
      expect(start.get(`${m}.lora_A.weight`)!.shape[0]).toBe(1);
      const w = product(f.coordinator.global, m), w1 = product(start, m);
      // the rank-1 truncation of W: W - W1 orthogonal to W1, and W1 the larger part (sigma_1 >= sigma_2)
      const resid = w.v.map((x, i) => x - w1.v[i]);
      expect(Math.abs(dot(resid, w1.v))).toBeLessThan(1e-5 * dot(w.v, w.v));
      expect(dot(w1.v, w1.v)).toBeGreaterThanOrEqual(dot(resid, resid));
      expect(dot(w1.v, w1.v)).toBeGreaterThan(0);
    }
    expect(f.coordinator.uploads).toHaveLength(1);
    const bytes = f.coordinator.uploads[0].bytes;
    expect(parseSafetensorsHeader(bytes, bytes.length, 'upload').metadata).toMatchObject({ payload_kind: 'weights', lora_r: '1' });
    for (const [k, t] of decodeSafetensorsF32(bytes).tensors) {
      const s = start.get(k)!;
      expect(t.shape).toEqual(s.shape);
      for (const [i, v] of t.data.entries()) expect(v).toBeCloseTo(s.data[i] + (k.includes('.lora_B.') ? 0.125 : 0), 6);
    }
    const train = f.coordinator.metrics.find((m) => m.phase === 'train')!;
    expect(train.metrics.find((m) => m.name === 'train_lora_rank')?.value).toBe(1);
  }, TEST_TIMEOUT_MS);

  it('ffa: starts from A\'s first row and the fitted B, sends the rank-1 B delta', async () => {
    const f = await smallSite();
    const { trainer, requests } = shiftingTrainer(0.125);
    const task = f.task({ aggregation: 'ffa', payloadKind: 'delta', lora: { ...f.task().lora, freezeA: true, minSiteR: 1 } });
    await runTrainRound(f.deps({ trainer }), task, TRAIN_ROUND);
    const start = requests[0].initAdapter!;
    for (const m of modulesOf(f.coordinator.global)) {
      const a = f.coordinator.global.get(`${m}.lora_A.weight`)!;
      expect([...start.get(`${m}.lora_A.weight`)!.data]).toEqual([...a.data.subarray(0, a.shape[1])]);
    }
    const sent = decodeSafetensorsF32(f.coordinator.uploads[0].bytes).tensors;
    expect([...sent.keys()].every((k) => k.includes('.lora_B.'))).toBe(true);
    for (const t of sent.values()) {
      expect(t.shape[1]).toBe(1);
      for (const v of t.data) expect(v).toBeCloseTo(0.125, 6);
    }
  }, TEST_TIMEOUT_MS);

  it('declines a job whose min_site_r is above its policy.max_lora_rank, before fetching anything', async () => {
    const f = await smallSite();
    const { trainer, requests } = shiftingTrainer(0.125);
    const task = f.task({ aggregation: 'svd', payloadKind: 'weights', lora: { ...f.task().lora, minSiteR: 2 } });
    await runTrainRound(f.deps({ trainer }), task, TRAIN_ROUND);
    expect(f.coordinator.declined).toEqual([{ taskId: task.taskId, code: 'FEDLORA_ERR_POLICY', reason: 'the job trains LoRA rank 2 and accepts sites down to rank 2 (lora.min_site_r); this site trains at most rank 1 (policy.max_lora_rank)' }]);
    expect(requests).toHaveLength(0);
    expect(f.coordinator.fetches).toHaveLength(0);
    expect(f.coordinator.uploads).toHaveLength(0);
  }, TEST_TIMEOUT_MS);

  it('the final EVALUATE task personalises at the site\'s rank, from the global re-compressed to it', async () => {
    const f = await siteFixture({
      policy: { min_sites_per_aggregation: 1, allowed_fields: ['department', 'chiefComplaint', 'diagnosis'], max_lora_rank: 1 },
      training: { local_baseline: false, personal_steps: 2, max_seq_len: 1024, max_train_examples: 8 },
    });
    fixtures.push(f);
    const { trainer, requests } = shiftingTrainer(0.125);
    await runEvaluateTask(f.deps({ trainer }), f.task({ kind: 'TASK_KIND_EVALUATE', aggregation: 'svd', lora: { ...f.task().lora, minSiteR: 1 } }));
    expect(requests.map((r) => [r.workDir.split('/').at(-1), r.lora.r, r.lora.alpha])).toEqual([['personal', 1, 2]]);
    for (const [k, t] of requests[0].initAdapter!) expect(k.includes('.lora_A.') ? t.shape[0] : t.shape[1]).toBe(1);
    expect(f.coordinator.metrics.filter((m) => m.phase === 'eval').map((m) => m.metrics[0].kind)).toEqual(['global', 'personal']);
  }, TEST_TIMEOUT_MS);

  it('scores a peer\'s lower-rank local-only adapter with that rank\'s settings', async () => {
    const f = await smallSite();
    const peer = adapterWeightsAtRank(f.coordinator.global, 1, { frozenA: false });
    const seen: LoraConfig[] = [];
    const task = f.task({ kind: 'TASK_KIND_CROSS_EVAL', lora: { ...f.task().lora, minSiteR: 1 } });
    const ctx = {
      siteId: 'hospital-fixture', config: f.config, audit: { append: () => undefined }, log: f.log, privateKeyPem: '', workDir: f.dir,
      ws: { loadLocalBaseline: () => null, evaluate: async (_w: AdapterWeights, lora: LoraConfig) => (seen.push(lora), []) },
      wire: {
        ...f.coordinator.wire,
        fetchAdapter: async (_req: { jobId: string; version: number }, dir: string) => {
          writePeftAdapter(dir, peer, { r: 1, alpha: 2, targets: ['q_proj', 'v_proj'], dropout: 0, useRslora: false, baseModel: 'fedlora/tiny-llama' });
          return { adapterFile: '', adapterConfigJson: Buffer.alloc(0), manifestJson: Buffer.from(JSON.stringify({ adapter_sha256: 'x', owner_site: 'hospital-small' })), signature: Buffer.alloc(0) };
        },
      },
    };
    const done = await handleCrossEval(ctx as unknown as Parameters<typeof handleCrossEval>[0], { ...task, peerAdapters: [{ jobId: JOB, version: 1, sha256: '', sizeBytes: 0, manifestSha256: '' }], peerSites: ['hospital-small'] });
    expect(done.owners).toEqual(['hospital-small']);
    expect(seen.map((l) => [l.r, l.alpha])).toEqual([[1, 2]]);
  }, TEST_TIMEOUT_MS);
});
