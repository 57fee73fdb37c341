// A federated exam over the real federation: a coordinator and three enrolled sites over mutual
// TLS finish a job on a tiny qwen2 model (the sites' own copy); real site agents (startSiteAgent)
// run; an admin asks for the exam with `fedlora job exam`; the EXAM task reaches each site on its
// task stream; the two sites that hold the exam file score it with the job's global adapter and
// report figures only, the third declines naming why. The figures the coordinator stored are
// exactly what the exam harness computes from the same file and adapter at the site; the consortium
// figure is their count-weighted mean with a pooled interval; no question text reaches the coordinator.
import { describe, it, expect, afterAll } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { computeModelManifest, initTinyModel, readPeftAdapter, loadModel, loraOfPeft } from '../../site-agent/engine/index.ts';
import { startSiteAgent, type RunningSite } from '../../site-agent/agent/run.ts';
import { runSecAggSite } from '../../site-agent/agent/secagg-client.ts';
import { readExamFile } from '../../site-agent/eval/exam/exam-file.ts';
import { engineExamModel, examResults, scoreExam } from '../../site-agent/eval/exam/exam-run.ts';
import { randomDelta, secAggSpec, startFederation, waitOpen, type Federation } from '../secagg-e2e/helpers.ts';
import { tempDir, rmDir } from '../coordinator/helpers.ts';
import { TEST_TIMEOUT_MS, SLOWDOWN } from '../runner/limits.ts';

const run = promisify(execFile);
const SAMPLE = join(import.meta.dirname, '..', '..', 'site-agent', 'eval', 'exam', 'sample-exam.jsonl');
const IDS = ['site-a', 'site-b', 'site-c'];
const HOLDERS = ['site-a', 'site-b'];
const JOB = 'job-exam';
const RESAMPLES = 200;
let fed: Federation | undefined;
const agents: RunningSite[] = [];
let modelRoot = '';
const quiet = { info() {}, warn() {}, error() {} };

afterAll(async () => {
  for (const a of agents) await a.stop();
  await fed?.close();
  if (modelRoot) rmDir(modelRoot);
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('federated exam', () => {
  it('sites score their own copy; only figures leave; a site without the file declines; the consortium figure pools them', async () => {
    modelRoot = tempDir('exam-model');
    const modelDir = join(modelRoot, 'tiny');
    initTinyModel({ arch: 'qwen2', out: modelDir, seed: 4, layers: 2, hidden: 64, heads: 4, kvHeads: 2, intermediate: 128, tokenizer: 'byte' });
    const config = JSON.parse(readFileSync(join(modelDir, 'config.json'), 'utf8')) as Record<string, unknown>;
    fed = await startFederation(IDS);
    const f = fed;
    await f.coord.engine.submitJob(secAggSpec({ min_sites: 3, max_sites: 3, base_model: { id: 'tiny/qwen2', manifest_sha256: computeModelManifest(modelDir).sha256, config } }), JOB);
    await waitOpen(() => f.coord, JOB, 1);
    const { layout } = f.coord.engine.jobInfo(JOB);
    await Promise.all(f.sites.map((s, k) => runSecAggSite(s.wire, { jobId: JOB, round: 1, siteId: s.id, update: randomDelta(layout.update.total, 5 + k, 0.05), numExamples: 10, pollMs: 50, deadlineUnixMs: Date.now() + 60_000 * SLOWDOWN })));
    expect((await f.coord.engine.waitForJob(JOB, 60_000 * SLOWDOWN)).status).toBe('completed');

    // each site's own settings: its copy of the model; two of them hold the exam as "sample"
    for (const s of f.sites) {
      const exams = HOLDERS.includes(s.id) ? `  exams: { sample: ${JSON.stringify(SAMPLE)} }\n` : '';
      writeFileSync(join(s.dir, 'site.yaml'), `model: { path: ${JSON.stringify(modelDir)} }\nevaluation:\n  min_items: 2\n  bootstrap: { resamples: ${RESAMPLES}, seed: 9 }\n${exams}`);
      agents.push(await startSiteAgent(s.dir, { endpoint: f.coord.federationEndpoint, logger: quiet }));
    }

    const token = readFileSync(join(f.dataDir, 'admin.token'), 'utf8').trim();
    const cli = (...a: string[]) => run(process.execPath, ['cli/bin.mjs', 'job', 'exam', JOB, '--url', f.coord.httpUrl, '--token', token, ...a]);
    const asked = await cli('--exam', 'sample', '--mode', 'both');
    expect(asked.stdout).toMatch(/^exam sample of job job-exam v1 sent to site-a, site-b, site-c/);

    // wait for every site's answer: done, or declined with its reason
    type ExamTaskView = { site: string; status: string; decline_reason: string | null; version: number };
    let tasks: ExamTaskView[] = [];
    while (!(tasks.length === 3 && tasks.every((t) => t.status === 'done' || t.status === 'declined'))) {
      await sleep(200);
      tasks = JSON.parse((await cli('--show')).stdout).tasks;
    }
    expect(tasks.map((t) => [t.site, t.status, t.version])).toEqual([['site-a', 'done', 1], ['site-b', 'done', 1], ['site-c', 'declined', 1]]);
    expect(tasks[2].decline_reason).toBe('site site-c holds no exam "sample" (site.yaml evaluation.exams names none)');

    // what the coordinator holds: exactly the harness's figures at each site (same file, same adapter, the site's draws)
    const exam = readExamFile(SAMPLE);
    const rows = f.coord.store.metrics(JOB, { evalSet: 'exam:sample' });
    for (const site of HOLDERS) {
      const dir = join(f.sites.find((s) => s.id === site)!.dir, 'adapters', JOB, 'v1');
      expect(existsSync(join(dir, 'adapter_model.safetensors'))).toBe(true);
      const peft = readPeftAdapter(dir);
      const m = await loadModel(modelDir);
      const scored = await scoreExam(engineExamModel(m.checkpoint, m.tokenizer, peft.weights, loraOfPeft(peft.config), { device: 'cpu' }), exam.items, { mode: 'both', maxNewTokens: 16 });
      const want = examResults({ ...exam, name: 'sample' }, scored, { minCount: 2, resamples: RESAMPLES, seed: 9, label: site });
      const got = rows.filter((r) => r.site_id === site);
      for (const w of want.filter((x) => !/latency/.test(x.name))) {
        const g = got.find((r) => r.metric === w.name && r.subset === w.subset);
        expect(g, `${site} ${w.name} ${w.subset}`).toBeDefined();
        expect([g!.kind, g!.round, g!.value, g!.count], `${site} ${w.name} ${w.subset}`).toEqual(['global', 1, w.value, w.count]);
        if (w.ci) expect([g!.ci_low, g!.ci_high], `${site} ${w.name} ${w.subset}`).toEqual(w.ci);
      }
      expect(got.filter((r) => r.metric === 'latency_p95_ms')).toHaveLength(1);
      expect(got.find((r) => r.metric === 'accuracy' && r.subset === '')!.count).toBe(12);
      // subjects with one question are withheld (evaluation.min_items 2)
      expect(got.some((r) => r.subset === 'subject=endocrinology')).toBe(false);
      expect(got.some((r) => r.subset === 'subject=cardiology')).toBe(true);
    }
    expect(rows.some((r) => r.site_id === 'site-c')).toBe(false);

    // the consortium figure over HTTP: weighted by count, with the interval pooled from the sites' replicates
    const sum = (await (await fetch(`${f.coord.httpUrl}/api/jobs/${JOB}/metrics/summary?eval_set=exam:sample&metric=accuracy&subset=`, { headers: { authorization: `Bearer ${token}` } })).json()) as { summary: { sites: number; count: number; weighted_mean: number; ci_low: number | null; ci_high: number | null }[] };
    const acc = (s: string) => rows.find((r) => r.site_id === s && r.metric === 'accuracy' && r.subset === '')!.value;
    expect(sum.summary).toHaveLength(1);
    expect(sum.summary[0]).toMatchObject({ sites: 2, count: 24 });
    expect(sum.summary[0].weighted_mean).toBeCloseTo((acc('site-a') + acc('site-b')) / 2, 12);
    expect(sum.summary[0].ci_low).not.toBeNull();
    expect(sum.summary[0].ci_low!).toBeLessThanOrEqual(sum.summary[0].weighted_mean);
    expect(sum.summary[0].ci_high!).toBeGreaterThanOrEqual(sum.summary[0].weighted_mean);

    // nothing of the questions reached the coordinator's database
    const db = ['coordinator.sqlite', 'coordinator.sqlite-wal'].map((n) => join(f.dataDir, n)).filter(existsSync).map((p) => readFileSync(p)).reduce((a, b) => Buffer.concat([a, b]), Buffer.alloc(0));
    for (const phrase of ['crushing chest pain', '慢性阻塞性肺疾病', 'Right coronary artery']) expect(db.includes(Buffer.from(phrase))).toBe(false);
  }, 5 * TEST_TIMEOUT_MS);
});
