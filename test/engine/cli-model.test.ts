// The engine's CLI as users call it: `fedlora model init-tiny|score|merge`, `fedlora train`,
// `fedlora generate`, Ctrl-C during training, and the errors for bad input.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readPeftAdapter } from '../../shared/lora/peft.ts';
import { TEST_TIMEOUT_MS } from '../runner/limits.ts';
import { runProcess } from '../runner/run-process.ts';
import { digitJsonl, tempDir } from './train-fixtures.ts';

const BIN = join(import.meta.dirname, '..', '..', 'cli', 'bin.mjs');
const tmp = tempDir('cli-model');
afterAll(() => tmp.cleanup());
const p = (...s: string[]) => join(tmp.dir, ...s);

/** The CLI to its end (asynchronously: training blocks nothing here); up to a test's whole limit. */
async function cli(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const r = await runProcess(process.execPath, [BIN, ...args], { cwd: tmp.dir, timeoutMs: TEST_TIMEOUT_MS });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const trainArgs = (out: string, ...more: string[]) => ['train', '--model', p('model'), '--data', p('data.jsonl'), '--out', out, '--rank', '4', '--alpha', '8', '--lr', '1e-2', '--micro-batch', '2', '--seed', '7', ...more];

beforeAll(async () => {
  const r = await cli('model', 'init-tiny', '--arch', 'llama', '--out', p('model'), '--seed', '3', '--layers', '2', '--hidden', '64', '--heads', '4', '--kv-heads', '2');
  expect(r.code, r.stderr).toBe(0);
  digitJsonl(p('data.jsonl'), 60, 1);
});

describe('fedlora model / train / generate', () => {
  it('init-tiny writes a Hugging Face model folder (qwen2 too)', async () => {
    expect(existsSync(p('model', 'config.json'))).toBe(true);
    expect(existsSync(p('model', 'tokenizer.json'))).toBe(true);
    const r = await cli('model', 'init-tiny', '--arch', 'qwen2', '--out', p('qwen'), '--layers', '1', '--hidden', '32', '--heads', '2', '--kv-heads', '1', '--dtype', 'bf16');
    expect(r.code, r.stderr).toBe(0);
    const cfg = JSON.parse(readFileSync(p('qwen', 'config.json'), 'utf8'));
    expect(cfg.model_type).toBe('qwen2');
    expect(cfg.hidden_size).toBe(32);
  });

  it('train writes a PEFT adapter and train_metrics.json; score/generate/merge use it', async () => {
    const r = await cli(...trainArgs(p('ad'), '--steps', '6', '--targets', 'q_proj,v_proj'));
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/step 6\/6 \[=+\] loss \d+\.\d{4} lr [\d.e+-]+ \d+ tok\/s ETA 0:00/);
    const m = JSON.parse(readFileSync(p('ad', 'train_metrics.json'), 'utf8'));
    expect(m.lossPerStep).toHaveLength(6);
    expect(m.tokensPerSecond).toBeGreaterThan(0);
    const ad = readPeftAdapter(p('ad'));
    expect(ad.config.r).toBe(4);
    expect(ad.config.targets).toEqual(['q_proj', 'v_proj']);
    expect([...ad.weights.keys()].some((k) => k.includes('lora_B') && ad.weights.get(k)!.data.some((x) => x !== 0))).toBe(true);

    // score: first logprob null, the rest finite and <= 0; --ids == --text's tokens; the adapter changes scores
    const s1 = await cli('model', 'score', '--model', p('model'), '--text', 'count from 3: 4 5 6', '--json');
    expect(s1.code, s1.stderr).toBe(0);
    const j1 = JSON.parse(s1.stdout) as { tokens: number[]; logprobs: (number | null)[] };
    expect(j1.logprobs).toHaveLength(j1.tokens.length);
    expect(j1.logprobs[0]).toBeNull();
    expect(j1.logprobs.slice(1).every((x) => typeof x === 'number' && x <= 0 && Number.isFinite(x))).toBe(true);
    const s2 = JSON.parse((await cli('model', 'score', '--model', p('model'), '--ids', j1.tokens.join(','), '--json')).stdout);
    expect(s2).toEqual(j1);
    const s3 = JSON.parse((await cli('model', 'score', '--model', p('model'), '--adapter', p('ad'), '--ids', j1.tokens.join(','), '--json')).stdout);
    expect(s3.logprobs.slice(1)).not.toEqual(j1.logprobs.slice(1));

    // merge: the merged model scores like base + adapter
    const mg = await cli('model', 'merge', '--model', p('model'), '--adapter', p('ad'), '--out', p('merged'));
    expect(mg.code, mg.stderr).toBe(0);
    const s4 = JSON.parse((await cli('model', 'score', '--model', p('merged'), '--ids', j1.tokens.join(','), '--json')).stdout);
    for (let i = 1; i < s4.logprobs.length; i++) expect(s4.logprobs[i]).toBeCloseTo(s3.logprobs[i], 3);

    // generate runs with the adapter (greedy; the text of a random tiny model is arbitrary)
    const g1 = await cli('generate', '--model', p('model'), '--adapter', p('ad'), '--prompt', 'count from 3:', '--max-new-tokens', '5');
    expect(g1.code, g1.stderr).toBe(0);
    expect(g1.stdout.endsWith('\n')).toBe(true);
  });

  it('Ctrl-C finishes the step, writes a checkpoint, exits 130; a resume with other settings is refused', async () => {
    const out = p('ad-int');
    const child = spawn(process.execPath, [BIN, ...trainArgs(out, '--steps', '100000', '--lora-dropout', '0.1')], { cwd: tmp.dir });
    let stderr = '';
    await new Promise<void>((resolve) => {
      child.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
        if (/step 2\//.test(stderr)) resolve();
      });
    });
    child.kill('SIGINT');
    const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    expect(code, stderr).toBe(130);
    expect(stderr).toMatch(/interrupted after step \d+: checkpoint written to .*ad-int[/\\]checkpoint/);
    const state = JSON.parse(readFileSync(join(out, 'checkpoint', 'run_state.json'), 'utf8'));
    expect(state.step).toBeGreaterThanOrEqual(2);
    expect(state.totalSteps).toBe(100000);
    expect(existsSync(join(out, 'adapter_model.safetensors'))).toBe(false); // no half-trained adapter presented as final
    expect(JSON.parse(readFileSync(join(out, 'train_metrics.json'), 'utf8')).interrupted).toBe(true);
    // resuming with different settings is refused (a changed --steps is a different run)
    const bad = await cli(...trainArgs(out, '--steps', '5', '--lora-dropout', '0.1', '--resume'));
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/FEDLORA_ERR_CONFIG: .*checkpoint belongs to a different run/);
  });

  it('--quantize int4/int8 on train, score and generate; peak memory in train_metrics.json', async () => {
    const r = await cli(...trainArgs(p('q4'), '--steps', '3', '--targets', 'q_proj,k_proj,v_proj,o_proj', '--quantize', 'int4', '--recompute'));
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/peak RSS \d+\.\d\d GiB/);
    const m = JSON.parse(readFileSync(p('q4', 'train_metrics.json'), 'utf8'));
    expect(m).toMatchObject({ quantize: 'int4', recompute: true });
    expect(m.peakRssBytes).toBeGreaterThan(50 * 2 ** 20);
    expect(readPeftAdapter(p('q4')).config.targets).toEqual(['q_proj', 'k_proj', 'v_proj', 'o_proj']); // a PEFT adapter of the unquantized base
    const ids = '5,6,7,8,9,10,11,12';
    const f32 = JSON.parse((await cli('model', 'score', '--model', p('model'), '--adapter', p('q4'), '--ids', ids, '--json')).stdout).logprobs as (number | null)[];
    const q8 = await cli('model', 'score', '--model', p('model'), '--adapter', p('q4'), '--ids', ids, '--json', '--quantize', 'int8');
    expect(q8.code, q8.stderr).toBe(0);
    const int8 = JSON.parse(q8.stdout).logprobs as (number | null)[];
    expect(int8.slice(1).some((x, i) => x !== f32[i + 1])).toBe(true);
    int8.slice(1).forEach((x, i) => expect(Math.abs(x! - f32[i + 1]!)).toBeLessThan(0.05));
    const g = await cli('generate', '--model', p('model'), '--prompt', 'count from 3:', '--max-new-tokens', '4', '--quantize', 'int4');
    expect(g.code, g.stderr).toBe(0);
    expect((await cli('model', 'score', '--model', p('model'), '--ids', ids, '--quantize', 'int2')).stderr).toMatch(/--quantize "int2": expected one of none, int8, int4/);
  });
});
