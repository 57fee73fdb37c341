// The agent's side of the external-trainer and external-evaluation contracts, end to end with a
// real Python process: test/site-agent/fixtures/torch_contract_standin.py implements both
// contracts with torch + numpy (it loads our safetensors and takes real optimizer steps on the
// LoRA factors of our tiny model), standing in for deploy/trainers/peft_trainer.py and
// peft_evaluator.py, which need transformers + peft (not installable here). The round runs on an
// in-process site with real parts (site-fixture.ts); the stand-in keeps a copy of what it wrote,
// so the test checks that what the agent sent is exactly what the external tools produced.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runTrainRound } from '../../site-agent/agent/train-round.ts';
import { CommandTrainer } from '../../site-agent/agent/trainers.ts';
import { CommandEvaluator, createEvaluator } from '../../site-agent/agent/eval-command.ts';
import { normalizeDiagnosis } from '../../site-agent/agent/evaluation.ts';
import { buildDatasets, openSiteDataStore } from '../../site-agent/data/index.ts';
import { decodeSafetensorsF32 } from '../../shared/safetensors.ts';
import { readPeftAdapter } from '../../shared/lora/peft.ts';
import { parseSiteConfig } from '../../site-agent/config.ts';
import YAML from 'yaml';
import { PYTHON, requireTool, TORCH } from '../runner/reference-tools.ts';
import { runProcess } from '../runner/run-process.ts';
import { LORA, siteFixture, type SiteFixture } from './site-fixture.ts';

const STANDIN = join(import.meta.dirname, 'fixtures', 'torch_contract_standin.py');

const fixtures: SiteFixture[] = [];
const keepDirs: string[] = [];
afterEach(() => fixtures.splice(0).forEach((f) => f.cleanup()));
afterAll(() => keepDirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

beforeAll(() => requireTool(TORCH)); // the stand-in and the scripts run on Debian's python3

/** Where the stand-in copies what it writes (one numbered folder per call). */
function keepDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'fedlora-standin-keep-'));
  keepDirs.push(d);
  process.env.FEDLORA_STANDIN_KEEP = d;
  return d;
}

describe('external trainer and evaluator (a real Python process on the agent\'s job folders)', () => {
  it('the site evaluates and trains with its own tools; what leaves the site is exactly what they produced', async () => {
    const f = await siteFixture();
    fixtures.push(f);
    const keep = keepDir();
    const workRoot = join(f.dir, 'work');
    f.config.model.quantize = 'int8'; // the site's weight mode goes to both tools in job.json
    const deps = f.deps({
      trainer: new CommandTrainer([PYTHON, STANDIN, 'train'], 600),
      evaluator: createEvaluator({ ...f.config, evaluator: { kind: 'command', command: [PYTHON, STANDIN, 'eval'], timeout_s: 600 } }, f.dir, f.deps().workspace),
    });
    const task = f.task();
    task.lora.freezeA = true;
    await runTrainRound(deps, task);

    // Calls in order: evaluation of the global adapter (0), then training (1).
    const runs = readdirSync(keep).sort();
    expect(runs).toEqual(['0', '1']);
    const scores = JSON.parse(readFileSync(join(keep, '0', 'scores.json'), 'utf8'));
    const choicesSent = readFileSync(join(keep, '0', 'choices.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    // Answers never leave the agent: the evaluator sees prompts and options only.
    for (const c of choicesSent) expect(Object.keys(c).sort()).toEqual(['options', 'prompt']);

    // The agent computed the reported metrics from the evaluator's raw scores.
    const ds = buildDatasets(openSiteDataStore(f.db), { config: f.config.data, allowedFields: f.config.policy.allowed_fields, maxTrainExamples: 8 });
    const items = ds.choices.slice(0, f.config.evaluation.max_items);
    expect(choicesSent.map((c) => c.options)).toEqual(items.map((c) => c.options));
    const evalReport = f.coordinator.metrics.find((m) => m.phase === 'eval')!;
    const got = Object.fromEntries(evalReport.metrics.filter((m) => !m.subset).map((m) => [m.name, m]));
    expect(got.loss.value).toBe(scores.heldout.loss);
    expect(got.loss.count).toBe(scores.heldout.tokens);
    expect(got.perplexity.value).toBeCloseTo(Math.exp(scores.heldout.loss), 10);
    const correct = items.filter((c, i) => scores.choices.predicted[i] === c.answer).length;
    expect(got.accuracy.value).toBe(correct / items.length);
    const gen = items.slice(0, f.config.evaluation.generate_items);
    expect(got.exact_match.value).toBe(gen.filter((c, i) => normalizeDiagnosis(scores.generate.texts[i]) === normalizeDiagnosis(c.label)).length / gen.length);
    expect(got.exact_match.count).toBe(gen.length);
    // The per-item scores give the intervals, calibration and answer latency quantiles.
    for (const name of ['loss', 'accuracy', 'macro_f1', 'ece', 'brier', 'latency_p95_ms', 'exact_match', 'generation_latency_p50_ms']) {
      expect(got[name].ci, name).toMatchObject({ resamples: f.config.evaluation.bootstrap.resamples });
      expect(got[name].ci!.low, name).toBeLessThanOrEqual(got[name].ci!.high);
    }
    const its = [...scores.choices.item_seconds].map((x: number) => x * 1000).sort((a: number, b: number) => a - b);
    expect(got.latency_p50_ms.value).toBeCloseTo((its[(its.length - 1) >> 1] + its[its.length >> 1]) / 2, 9);

    // Training: the upload is the stand-in's adapter minus the global one, only lora_B (frozen A).
    const trained = readPeftAdapter(join(keep, '1', 'adapter')).weights;
    const metrics = JSON.parse(readFileSync(join(keep, '1', 'metrics.json'), 'utf8'));
    expect(metrics.loss).toHaveLength(task.train.localSteps);
    const sent = decodeSafetensorsF32(f.coordinator.uploads[0].bytes).tensors;
    expect([...sent.keys()].every((k) => k.includes('.lora_B.'))).toBe(true);
    expect(sent.size).toBe([...f.coordinator.global.keys()].filter((k) => k.includes('.lora_B.')).length);
    let moved = 0;
    for (const [k, t] of sent) {
      const g = f.coordinator.global.get(k)!.data, l = trained.get(k)!.data;
      t.data.forEach((v, i) => expect(v).toBe(Math.fround(l[i] - g[i])));
      moved += t.data.filter((v) => v !== 0).length;
    }
    expect(moved).toBeGreaterThan(0); // real optimizer steps moved B away from the global zeros
    for (const [k, t] of trained) if (k.includes('.lora_A.')) expect([...t.data]).toEqual([...f.coordinator.global.get(k)!.data]);
    expect(f.coordinator.uploads[0].header.numExamples).toBe(metrics.num_examples);
    expect(metrics.num_examples).toBe(readFileSync(join(keep, '1', 'train.jsonl'), 'utf8').trim().split('\n').length);
    const trainReport = f.coordinator.metrics.find((m) => m.phase === 'train')!;
    expect(trainReport.metrics.map((m) => [m.name, m.value])).toEqual([
      ['train_loss', metrics.loss.at(-1)], ['train_tokens_per_s', metrics.tokens_per_s],
      ['train_peak_rss_bytes', metrics.peak_rss_bytes], ['train_weight_bits', 32], // what the stand-in ran (it keeps float32)
    ]);
    expect(JSON.parse(readFileSync(join(keep, '1', 'job.json'), 'utf8')).quantize).toBe('int8');
    expect(JSON.parse(readFileSync(join(keep, '0', 'job.json'), 'utf8')).quantize).toBe('int8');
    // Both job folders are gone once read back.
    expect(readdirSync(workRoot)).toEqual([]);
  });
});

describe('contract errors name the file and the field', () => {
  const node = (code: string) => [process.execPath, '-e', code];

  it('an evaluator answering the wrong number of items, or an option that does not exist, is refused', async () => {
    const f = await siteFixture();
    fixtures.push(f);
    const evaluator = (code: string) => f.deps({ evaluator: new CommandEvaluator({ argv: node(code), timeoutS: 60, workRoot: join(f.dir, 'work'), modelDir: f.modelDir, device: 'cpu', maxSeqLen: 1024 }) });
    const write = (scores: string) => `const j=JSON.parse(require('fs').readFileSync(process.env.FEDLORA_EVAL_JOB,'utf8'));require('fs').writeFileSync(j.out_dir+'/scores.json', JSON.stringify(${scores}))`;
    const h = `heldout:{loss:1,tokens:9,seconds:1}`, g = `generate:{texts:['a','b'],new_tokens:2,seconds:1}`;
    await expect(evaluator(write(`{${h},choices:{predicted:[0],seconds:1},${g}}`)).workspace.evaluate(null, LORA))
      .rejects.toMatchObject({ code: 'FEDLORA_ERR_EVALUATION', message: expect.stringMatching(/scores\.json: choices\.predicted has 1 answers for 4 items/) });
    await expect(evaluator(write(`{${h},choices:{predicted:[0,1,2,99],seconds:1},${g}}`)).workspace.evaluate(null, LORA))
      .rejects.toThrow(/scores\.json: choices\.predicted\[3\] = 99, but item 3 has \d+ options/);
    // the optional per-item scores must answer the plan too
    await expect(evaluator(write(`{${h},choices:{predicted:[0,0,0,0],seconds:1,scores:[[1]]},${g}}`)).workspace.evaluate(null, LORA))
      .rejects.toThrow(/scores\.json: choices\.scores\[0\] has 1 scores, but item 0 has \d+ options/);
    await expect(evaluator(write(`{${h},choices:{predicted:[0,0,0,0],seconds:1,scores:[[0,5,0,0],[1,0,0,0],[1,0,0,0],[1,0,0,0]]},${g}}`)).workspace.evaluate(null, LORA))
      .rejects.toThrow(/choices\.scores\[0\]: the predicted option 0 does not have the highest score/);
    await expect(evaluator(write(`{heldout:{loss:1,tokens:9,seconds:1,items:[{nll:1,tokens:9}]}}`)).workspace.evaluate(null, LORA))
      .rejects.toThrow(/scores\.json: heldout\.items has 1 entries for \d+ items/);
    await expect(evaluator(write(`{heldout:{loss:'low',tokens:9,seconds:1}}`)).workspace.evaluate(null, LORA))
      .rejects.toThrow(/scores\.json: heldout\.loss: /);
    await expect(evaluator('process.exit(0)').workspace.evaluate(null, LORA)).rejects.toThrow(/external evaluator wrote no .*scores\.json/);
  });

  it('a trainer returning another rank, running past its timeout, or failing, is reported with its reason', async () => {
    const w = mkdtempSync(join(tmpdir(), 'fedlora-contract-'));
    keepDirs.push(w);
    writeFileSync(join(w, 'train.jsonl'), '{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]}\n');
    const adapter = (r: number) => new Map([
      ['base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight', { shape: [r, 2], data: new Float32Array(2 * r) }],
      ['base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight', { shape: [2, r], data: new Float32Array(2 * r) }],
    ]);
    const req = (dir: string) => ({
      workDir: join(w, dir), modelDir: '/m', baseModelId: 'm', device: 'cpu' as const,
      lora: { r: 2, alpha: 4, targets: ['q_proj' as const], dropout: 0, useRslora: false, freezeA: false, initSeed: 0 },
      train: { steps: 1, epochs: 0, learningRate: 1e-3, optimizer: 'adamw' as const, batchTokens: 64, seed: 1, proxMu: 0, weightDecay: 0, warmupSteps: 0, maxGradNorm: 1 },
      initAdapter: adapter(2), trainFile: join(w, 'train.jsonl'), maxSeqLen: 64,
    });
    // Returns the global adapter with another target list in its adapter_config.json.
    const otherTargets = `const fs=require('fs');const j=JSON.parse(fs.readFileSync(process.env.FEDLORA_JOB,'utf8'));const o=j.out_dir+'/adapter';
      fs.cpSync(j.global_adapter_dir,o,{recursive:true});const c=JSON.parse(fs.readFileSync(o+'/adapter_config.json','utf8'));c.target_modules=['q_proj','v_proj'];
      fs.writeFileSync(o+'/adapter_config.json',JSON.stringify(c));fs.writeFileSync(j.out_dir+'/metrics.json','{"num_examples":1}')`;
    await expect(new CommandTrainer(node(otherTargets), 60).train(req('targets')))
      .rejects.toThrow(/out[/\\]adapter: r = 2, target_modules \[q_proj, v_proj\]; the job asked for r = 2, \[q_proj\]/);
    await expect(new CommandTrainer(node('setTimeout(() => {}, 60000)'), 1).train(req('slow'))).rejects.toThrow(/timed out after 1 s \(trainer\.timeout_s\)/);
    await expect(new CommandTrainer(node('console.error("needs the Python package transformers"); process.exit(3)'), 60).train(req('fail')))
      .rejects.toThrow(/exited with 3: needs the Python package transformers/);
    // Nothing from an earlier attempt is read back as this one's: out/ is emptied before each run.
    await expect(new CommandTrainer(node('process.exit(0)'), 60).train(req('targets'))).rejects.toThrow(/wrote no adapter/);
  });
});

describe('the reference scripts (deploy/trainers), without transformers', () => {
  const TRAINERS = join(import.meta.dirname, '..', '..', 'deploy', 'trainers');
  const py = async (args: string[], env: Record<string, string> = {}) => {
    const r = await runProcess(PYTHON, args, { env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1', ...env } });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  };

  it('compile, and print their options', async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'fedlora-pyc-'));
    keepDirs.push(tmp);
    for (const f of ['peft_trainer.py', 'peft_evaluator.py', 'fedlora_contract.py', 'gpu_check.py']) {
      const r = await py(['-c', `import py_compile, sys; py_compile.compile(sys.argv[1], cfile=sys.argv[2], doraise=True)`, join(TRAINERS, f), join(tmp, `${f}c`)]);
      expect(r, f).toMatchObject({ code: 0 });
    }
    const help = await py([join(TRAINERS, 'peft_trainer.py'), '--help']);
    expect(help.code).toBe(0);
    for (const opt of ['--job', '--quantize', '--deepspeed', '--gradient-checkpointing', '--check']) expect(help.stdout).toContain(opt);
    expect((await py([join(TRAINERS, 'peft_trainer.py'), '--quantize', '3bit'])).stderr).toMatch(/invalid choice: '3bit'/);
    // The GPU check names what it needs instead of failing on an import deep inside.
    expect(await py([join(TRAINERS, 'gpu_check.py'), '--bundle', tmp, '--out', join(tmp, 'out')])).toMatchObject({ code: 3, stderr: expect.stringMatching(/gpu_check\.py: missing Python package\(s\): (torch, )?transformers, peft/) });
  });

  it('read the job folders the agent writes: a plan with --check, the missing package named otherwise', async () => {
    const f = await siteFixture();
    fixtures.push(f);
    const ws = f.deps().workspace;
    const { trainFile } = await ws.trainingData();
    const { writeTrainJob } = await import('../../site-agent/agent/train-contract.ts');
    const lora = { r: 2, alpha: 4, targets: ['q_proj' as const, 'v_proj' as const], dropout: 0, useRslora: false, freezeA: true, initSeed: 5 };
    const req = {
      workDir: join(f.dir, 'work', 't', 'global'), modelDir: f.modelDir, baseModelId: 'fedlora/tiny-llama', device: 'cpu' as const, lora,
      train: { steps: 3, epochs: 0, learningRate: 1e-3, optimizer: 'adamw' as const, batchTokens: 4096, seed: 1, proxMu: 0.01, weightDecay: 0, warmupSteps: 0, maxGradNorm: 1 },
      initAdapter: f.coordinator.global, trainFile, maxSeqLen: 1024,
    };
    const jobFile = writeTrainJob(req);
    const trainer = join(TRAINERS, 'peft_trainer.py');
    const plan = await py([trainer, '--check'], { FEDLORA_JOB: jobFile });
    expect(plan.code).toBe(0);
    expect(JSON.parse(plan.stdout)).toMatchObject({ world_size: 1, quantize: 'none', gradient_accumulation_steps: 4, max_steps: 3, freeze_a: true, start: 'global_adapter' });
    expect(JSON.parse((await py([trainer, '--check', '--job', jobFile], { WORLD_SIZE: '4' })).stdout)).toMatchObject({ world_size: 4, gradient_accumulation_steps: 1 });
    const zero3 = await py([trainer, '--check', '--deepspeed', join(TRAINERS, 'ds_zero3.json')], { FEDLORA_JOB: jobFile });
    expect(zero3).toMatchObject({ code: 2, stderr: expect.stringMatching(/train\.prox_mu = 0\.01 \(FedProx\) needs whole parameters; ZeRO-3 shards them/) });
    const job = JSON.parse(readFileSync(jobFile, 'utf8'));
    // the site's model.quantize picks QLoRA unless the command line says otherwise; a bad one is named
    expect(job.quantize).toBe('none');
    writeFileSync(jobFile, JSON.stringify({ ...job, quantize: 'int4' }));
    expect(JSON.parse((await py([trainer, '--check'], { FEDLORA_JOB: jobFile })).stdout)).toMatchObject({ quantize: '4bit' });
    expect(JSON.parse((await py([trainer, '--check', '--quantize', 'none'], { FEDLORA_JOB: jobFile })).stdout)).toMatchObject({ quantize: 'none' });
    writeFileSync(jobFile, JSON.stringify({ ...job, quantize: 'int3' }));
    expect(await py([trainer, '--check'], { FEDLORA_JOB: jobFile })).toMatchObject({ code: 2, stderr: expect.stringMatching(/job\.json: quantize = "int3": must be none, int8 or int4/) });
    writeFileSync(jobFile, JSON.stringify({ ...job, train: { ...job.train, learning_rate: 0 } }));
    expect(await py([trainer, '--check'], { FEDLORA_JOB: jobFile })).toMatchObject({ code: 2, stderr: expect.stringMatching(/job\.json: train\.learning_rate = 0: must be > 0/) });
    expect(await py([trainer, '--check'], { FEDLORA_JOB: '' })).toMatchObject({ code: 2, stderr: expect.stringMatching(/no job file: pass --job PATH or set FEDLORA_JOB/) });

    // Run by the agent as its trainer: the missing packages are named in the error it reports.
    await expect(new CommandTrainer([PYTHON, trainer], 120).train(req)).rejects.toMatchObject({
      code: 'FEDLORA_ERR_TRAINING',
      message: expect.stringMatching(/exited with 3: peft_trainer\.py: missing Python package\(s\): (torch, )?transformers, peft.*pip install/),
    });

    // The evaluator's side: an agent-written eval folder, checked; the missing packages named.
    const evaluator = join(TRAINERS, 'peft_evaluator.py');
    const deps = f.deps({ evaluator: new CommandEvaluator({ argv: [PYTHON, evaluator], timeoutS: 120, workRoot: join(f.dir, 'work'), modelDir: f.modelDir, device: 'cpu', maxSeqLen: 1024 }) });
    await expect(deps.workspace.evaluate(f.coordinator.global, lora)).rejects.toMatchObject({
      code: 'FEDLORA_ERR_EVALUATION', message: expect.stringMatching(/external evaluator .* exited with 3: peft_evaluator\.py: missing Python package\(s\): (torch, )?transformers, peft/),
    });
    const evalDir = readdirSync(join(f.dir, 'work')).find((d) => d.startsWith('eval-'))!; // kept after the failure
    const check = await py([evaluator, '--check', '--job', join(f.dir, 'work', evalDir, 'job.json')]);
    expect(check.code).toBe(0);
    expect(JSON.parse(check.stdout)).toMatchObject({ adapter: join(f.dir, 'work', evalDir, 'adapter'), items: { heldout: expect.any(Number), choices: 4, generate: 2 }, quantize: 'none' });
    const evalJob = join(f.dir, 'work', evalDir, 'job.json');
    writeFileSync(evalJob, JSON.stringify({ ...JSON.parse(readFileSync(evalJob, 'utf8')), quantize: 'int8' }));
    expect(JSON.parse((await py([evaluator, '--check', '--job', evalJob])).stdout)).toMatchObject({ quantize: '8bit' });
  });

  it('the site config chooses the evaluator: the engine by default, the command when configured', () => {
    const model = { checkpoint: () => { throw new Error('not loaded'); }, tokenizer: () => { throw new Error('not loaded'); } };
    expect(createEvaluator(parseSiteConfig({ model: { path: '/m' } }), '/site', model).kind).toBe('engine');
    const cfg = parseSiteConfig({ model: { path: '/m' }, evaluator: { kind: 'command', command: ['/opt/eval'] } });
    expect(cfg.evaluator).toEqual({ kind: 'command', command: ['/opt/eval'], timeout_s: 3600 });
    expect(createEvaluator(cfg, '/site', model).kind).toBe('command');
    expect(() => parseSiteConfig({ model: { path: '/m' }, evaluator: { kind: 'command' } }, 'site.yaml')).toThrow(/site\.yaml: evaluator\.command: /);
  });

  it('the site config example in deploy/README.md is valid and runs these scripts', () => {
    const readme = readFileSync(join(TRAINERS, '..', 'README.md'), 'utf8');
    const block = [...readme.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1]).find((b) => b.includes('peft_trainer.py'))!;
    const cfg = parseSiteConfig({ model: { path: '/m' }, ...YAML.parse(block) }, 'deploy/README.md GPU sites');
    expect(cfg.trainer).toMatchObject({ kind: 'command', command: expect.arrayContaining(['/opt/fedlora/deploy/trainers/peft_trainer.py']) });
    expect(cfg.evaluator).toMatchObject({ kind: 'command', command: expect.arrayContaining(['/opt/fedlora/deploy/trainers/peft_evaluator.py']) });
  });
});
