// Step (c) of the GPU check, back on the checkout: what peft_trainer.py wrote on the GPU machine
// (OUT/train-*/out/) goes through the agent's own contract reader (readTrainOutput: PEFT adapter of
// the job's rank and targets, metrics.json) and becomes the update the agent would send
// (local - global, finite), so the whole path GPU trainer -> agent -> coordinator is exercised.
//
//   npx tsx test/gpu/read-back.ts OUT gpu-check-bundle
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { readTrainOutput } from '../../site-agent/agent/train-contract.ts';
import { assertFinite, buildUpdateTensors } from '../../site-agent/agent/update-payload.ts';
import { l2norm } from '../../shared/tensors.ts';
import { readPeftAdapter } from '../../shared/lora/peft.ts';

const [out, bundle] = process.argv.slice(2);
if (!out || !bundle) {
  console.error('usage: npx tsx test/gpu/read-back.ts OUT gpu-check-bundle');
  process.exit(2);
}
const report = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8'));
for (const c of report.logprobs?.cases ?? []) console.log(`(a) ${c.model} + ${c.adapter ?? 'no adapter'}: max |d logprob| ${c.max_abs_diff.toExponential(2)} ${c.ok ? 'ok' : 'FAIL'}`);
const global = readPeftAdapter(join(bundle, 'job', 'global_adapter')).weights;
const runs = readdirSync(out).filter((d) => d.startsWith('train-') && existsSync(join(out, d, 'out', 'metrics.json')));
if (runs.length === 0) {
  console.error(`${out}: no train-*/out/metrics.json: peft_trainer.py did not finish (see report.json)`);
  process.exit(1);
}
for (const run of runs) {
  const job = JSON.parse(readFileSync(join(out, run, 'job.json'), 'utf8'));
  const r = readTrainOutput(join(out, run), { r: job.lora.r, targets: job.lora.target_modules });
  assertFinite(r.adapter, `${run}: trained adapter`);
  const update = buildUpdateTensors(global, r.adapter, 'delta', false);
  const moved = [...update].filter(([k]) => k.includes('.lora_B.')).reduce((n, [, t]) => n + t.data.filter((v) => v !== 0).length, 0);
  console.log(`(c) ${run}: ${r.numExamples} examples, ${r.lossPerStep.length} steps, loss ${r.lossPerStep[0]?.toFixed(4)} -> ${r.lossPerStep.at(-1)?.toFixed(4)}, ` +
    `${r.tokensPerSecond.toFixed(0)} tokens/s; update ${update.size} tensors, |delta| ${l2norm([...update.values()].map((t) => t.data)).toExponential(3)}, ${moved} lora_B values moved`);
  if (moved === 0) {
    console.error(`${run}: the update does not move lora_B: training had no effect`);
    process.exit(1);
  }
}
