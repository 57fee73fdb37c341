// Quantized base weights on DeepSeek-R1-Distill-Qwen-1.5B shapes (quant-bench.ts): float32, int8 and
// int4 against PyTorch CPU (float32 and quantize_dynamic int8) in the same run, peak RSS per mode, and
// the quantization error against the float32 path. Run alone: `npm run bench -- quant-1.5b`.
import type { BenchRow } from './run.ts';
import { runQuantBench } from './quant-bench.ts';

export function run(): Promise<BenchRow[]> {
  return runQuantBench({
    preset: 'deepseek-r1-distill-qwen-1.5b', label: 'R1-Distill-Qwen-1.5B', seq: Number(process.env.FEDLORA_BENCH_SEQ ?? 256), errors: true,
    torch: [{ weights: 'f32', needGb: 10 }, { weights: 'int8', needGb: 5 }],
    engine: [
      { quantize: 'none', recompute: true, rssTarget: 9, needGb: 9 },
      { quantize: 'int8', recompute: true, rssTarget: 4.5, needGb: 5 },
      { quantize: 'int4', recompute: true, rssTarget: 3, needGb: 3.5 },
      { quantize: 'int4', recompute: false, needGb: 5 },
    ],
  });
}
