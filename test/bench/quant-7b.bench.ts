// Quantized base weights on DeepSeek-R1-Distill-Qwen-7B shapes (quant-bench.ts): int4 and int8
// against PyTorch CPU quantize_dynamic int8 in the same run, with peak RSS (a float32 7B model does
// not fit this 24 GB machine). Slow: writes a 15 GB checkpoint once and prepares each weight mode
// once. Run alone: `npm run bench -- quant-7b`.
import type { BenchRow } from './run.ts';
import { runQuantBench } from './quant-bench.ts';

export function run(): Promise<BenchRow[]> {
  return runQuantBench({
    preset: 'deepseek-r1-distill-qwen-7b', label: 'R1-Distill-Qwen-7B', seq: Number(process.env.FEDLORA_BENCH_SEQ ?? 256), errors: false, steps: 2,
    torch: [{ weights: 'int8', needGb: 13 }],
    engine: [
      { quantize: 'int4', recompute: true, rssTarget: 10, needGb: 10.5 },
      { quantize: 'int8', recompute: true, rssTarget: 14, needGb: 15 },
    ],
  });
}
