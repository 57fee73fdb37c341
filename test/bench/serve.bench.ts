// Serving: time to first token and decode tokens/s of the assistant (a real `fedlora site serve`
// in this process, the engine backend, streamed through the `openai` client on loopback) for
// one client and for 8 concurrent clients, against a PyTorch CPU greedy generation loop with a
// key/value cache of the same model and the same prompt tokens, measured in the same run
// (test/bench/ref/generate_torch.py; batch 1 and batch 8). Peak RSS of both processes.
// The model: `fedlora model init-random --like deepseek-r1-distill-qwen-1.5b` (see benchModel).
import { execFileSync, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import OpenAI from 'openai';
import type { BenchRow } from './run.ts';
import { buildMessages } from '../../site-agent/serve/prompt.ts';
import { startServe } from '../../site-agent/serve/run.ts';
import { makeSite, rmDir } from '../serve/helpers.ts';
import { tempDir } from '../coordinator/helpers.ts';
import { initTinyModel } from '../../site-agent/engine/index.ts';

const BIN = join(import.meta.dirname, '..', '..', 'cli', 'bin.mjs');
const NEW_TOKENS = 48;
const QUESTION = 'A 62-year-old has blood pressure of 162/98 mmHg on two visits. Which drug should be started first, and what follow-up is needed?';

/** R1-Distill-Qwen-1.5B shapes (hidden 1536, 12 heads, 2 KV heads, MLP 8960, vocab 151936, bf16),
 *  random weights; the first FEDLORA_BENCH_SERVE_LAYERS decoder layers (default 4 of 28, so that
 *  2 cores finish in minutes; 28 = the whole model). FEDLORA_BENCH_SERVE_MODEL=small: a small
 *  qwen2 (4 layers, hidden 512, byte tokenizer) for machines without the memory for the
 *  151936-token vocabulary (embedding + head ~2 GiB in float32 per process). */
function benchModel(dir: string): { dir: string; name: string } {
  if (process.env.FEDLORA_BENCH_SERVE_MODEL === 'small') {
    const m = initTinyModel({ arch: 'qwen2', out: join(dir, 'small'), seed: 5, layers: 4, hidden: 512, heads: 8, kvHeads: 2, intermediate: 1408, tokenizer: 'byte' });
    return { dir: m.dir, name: 'small qwen2 4L h512 (FEDLORA_BENCH_SERVE_MODEL=small)' };
  }
  const layers = Number(process.env.FEDLORA_BENCH_SERVE_LAYERS ?? 4);
  const out = join(dir, 'r1-distill-1.5b-random');
  execFileSync(process.execPath, [BIN, 'model', 'init-random', '--like', 'deepseek-r1-distill-qwen-1.5b', '--layers', String(layers), '--out', out], { stdio: 'ignore' });
  return { dir: out, name: `R1-Distill-Qwen-1.5B shapes, ${layers} of 28 layers, random bf16` };
}

function torchRef(modelDir: string, promptIds: number[], batch: number): { ttft_s: number; decode_tokens_per_s: number; peak_rss_mb: number } {
  const r = spawnSync('/usr/bin/python3', [join(import.meta.dirname, 'ref', 'generate_torch.py'), JSON.stringify({ model_dir: modelDir, prompt_ids: promptIds, new_tokens: NEW_TOKENS, batch })], { encoding: 'utf8', maxBuffer: 1 << 20 });
  if (r.status !== 0) throw new Error(`python3 generate_torch.py failed (install python3-torch: apt-get install python3-torch): ${r.stderr.slice(-800)}`);
  return JSON.parse(r.stdout);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

export async function run(): Promise<BenchRow[]> {
  const dir = tempDir('bench-serve');
  const model = benchModel(dir);
  const site = makeSite('bench-serve-site', { concurrency: 8, queue_size: 16, max_prompt_tokens: 4096, max_tokens_limit: 512, retrieval: { enabled: false, top_k: 1, max_passage_chars: 100 } }, { modelDir: model.dir });
  const srv = await startServe(site.siteDir);
  try {
    const client = new OpenAI({ apiKey: site.keys.clinician, baseURL: `${srv.url}/v1`, maxRetries: 0 });
    const promptIds = srv.assistant.backend.chatPrompt(buildMessages([{ role: 'user', content: QUESTION }], [], null)).ids;
    const once = async () => {
      const t0 = performance.now();
      let tFirst = 0, tokens = 0;
      const s = await client.chat.completions.create({ model: 'fedlora-assistant', messages: [{ role: 'user', content: QUESTION }], max_tokens: NEW_TOKENS, temperature: 0, stream: true, stream_options: { include_usage: true } });
      for await (const c of s) {
        if (!tFirst && c.choices[0]?.delta?.content) tFirst = performance.now();
        if (c.usage) tokens = c.usage.completion_tokens;
      }
      const tEnd = performance.now();
      return { ttftS: (tFirst - t0) / 1000, tokens, decodeS: (tEnd - tFirst) / 1000, wallS: (tEnd - t0) / 1000 };
    };
    await once(); // warm-up: graphs compiled and cached
    const single = [await once(), await once(), await once()];
    const t0 = performance.now();
    const conc = await Promise.all(Array.from({ length: 8 }, once));
    const wall8 = (performance.now() - t0) / 1000;
    const oursRss = process.resourceUsage().maxRSS / 1024;

    const ref1 = torchRef(model.dir, promptIds, 1);
    const ref8 = torchRef(model.dir, promptIds, 8);
    // A random model may end an answer at once (EOS): decode speed only from answers of 8+ tokens.
    const long = single.filter((x) => x.tokens >= 8);
    const tps1 = long.length ? median(long.map((x) => (x.tokens - 1) / x.decodeS)) : NaN;
    const tps8 = conc.reduce((a, x) => a + x.tokens, 0) / wall8;
    const note = `${model.name}; prompt ${promptIds.length} tokens, ${NEW_TOKENS} new (ours: fewer if EOS), greedy; peak RSS ours ${oursRss.toFixed(0)} MiB (whole bench process) vs torch ${ref8.peak_rss_mb.toFixed(0)} MiB`;
    return [
      { bench: 'serve, 1 client', metric: 'time to first token s', ours: median(single.map((x) => x.ttftS)), reference: ref1.ttft_s, referenceName: 'PyTorch CPU loop, batch 1', note: `lower is better; ours over HTTP incl. auth, queue, prompt; ${note}` },
      { bench: 'serve, 1 client', metric: 'decode tokens/s', ours: tps1, reference: ref1.decode_tokens_per_s, referenceName: 'PyTorch CPU loop, batch 1', note: `${model.name}; answer lengths ${single.map((x) => x.tokens).join(', ')} tokens (NaN: all under 8)` },
      { bench: 'serve, 8 concurrent', metric: 'time to first token s (median)', ours: median(conc.map((x) => x.ttftS)), reference: ref8.ttft_s, referenceName: 'PyTorch CPU loop, batch 8', note: 'lower is better; ours: 8 streams, no batching' },
      { bench: 'serve, 8 concurrent', metric: 'decode tokens/s (all clients)', ours: tps8, reference: ref8.decode_tokens_per_s, referenceName: 'PyTorch CPU loop, batch 8', note: 'ours: total tokens / wall time of the 8 requests' },
    ];
  } finally {
    await srv.close();
    rmDir(site.dir);
    rmDir(dir);
  }
}
