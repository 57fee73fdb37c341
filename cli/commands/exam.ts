// `fedlora eval exam --file questions.jsonl`: checks an exam file (MedQA / CMExam shapes, a malformed
// question named by line and field) and, with --model (and --adapter), scores it by log-likelihood
// and/or generation: accuracy with its 95% bootstrap interval, per subject, latency and calibration.
import type { CliGroups } from '../groups.ts';
import { fail } from '../../shared/errors.ts';
import { intFlag } from './model.ts';
import { adapterOption, deviceOption } from '../engine-options.ts';

const positiveInt = (flag: string, v: string) => intFlag(v, flag, { min: 1 })!;

export function register(g: CliGroups): void {
  g.eval
    .command('exam')
    .description('score an exam file (JSONL, MedQA / CMExam shapes) by log-likelihood and generation: accuracy with 95% intervals, per subject; without --model only checks the file')
    .requiredOption('--file <path>', 'questions, one JSON object a line (site-agent/eval/exam/sample-exam.jsonl is a small sample)')
    .option('--model <dir>', 'base model folder (without it: check the file only)')
    .addOption(adapterOption())
    .option('--mode <m>', 'loglik | generate | both', 'both')
    .option('--max-new-tokens <n>', 'tokens generated per answer', '24')
    .option('--limit <n>', 'only the first N questions')
    .option('--min-items <n>', 'withhold a subject with fewer questions', '1')
    .option('--resamples <n>', 'bootstrap resamples behind each interval', '1000')
    .option('--seed <n>', 'bootstrap seed', '20240611')
    .addOption(deviceOption())
    .option('--json', 'print figures and per-question answers as JSON', false)
    .action(async (o: { file: string; model?: string; adapter?: string; mode: string; maxNewTokens: string; limit?: string; minItems: string; resamples: string; seed: string; device: string; json: boolean }) => {
      if (!['loglik', 'generate', 'both'].includes(o.mode)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `--mode must be loglik, generate or both, got ${JSON.stringify(o.mode)}`);
      if (o.adapter && !o.model) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', '--adapter needs --model (the base model it was trained on)');
      const [maxNew, minItems, resamples] = [positiveInt('--max-new-tokens', o.maxNewTokens), positiveInt('--min-items', o.minItems), positiveInt('--resamples', o.resamples)];
      const seed = intFlag(o.seed, '--seed')!;
      const { readExamFile } = await import('../../site-agent/eval/exam/exam-file.ts');
      const exam = readExamFile(o.file);
      if (o.limit !== undefined) exam.items = exam.items.slice(0, positiveInt('--limit', o.limit));
      if (!o.model) {
        const subjects = [...new Set(exam.items.map((x) => x.subject).filter(Boolean))].sort();
        const check = { exam: exam.name, questions: exam.items.length, subjects, options: [...new Set(exam.items.map((x) => x.options.length))].sort() };
        process.stdout.write(o.json ? JSON.stringify(check, null, 2) + '\n' : `${o.file}: ${check.questions} questions, all well-formed; options per question: ${check.options.join(', ')}; subjects: ${subjects.join(', ') || '(none given)'}\n`);
        return;
      }
      const { loadModel } = await import('../../site-agent/engine/index.ts');
      const { engineExamModel, scoreExam, examResults } = await import('../../site-agent/eval/exam/exam-run.ts');
      const m = await loadModel(o.model, { adapter: o.adapter, device: o.device as 'cpu' });
      const scored = await scoreExam(engineExamModel(m.checkpoint, m.tokenizer, m.adapter, m.lora, { device: o.device as 'cpu' }), exam.items, {
        mode: o.mode as 'both', maxNewTokens: maxNew,
        onProgress: (d, n) => { if (!o.json && process.stderr.isTTY) process.stderr.write(`\r${d}/${n}`); },
      });
      await m.release();
      if (!o.json && process.stderr.isTTY) process.stderr.write('\r');
      const figs = examResults(exam, scored, { minCount: minItems, resamples, seed, label: 'cli' });
      const model = o.adapter ? `adapter ${o.adapter} on ${o.model}` : `base model ${o.model}`;
      if (o.json) {
        const figures = figs.map(({ replicates: _r, ...f }) => f);
        process.stdout.write(JSON.stringify({ exam: exam.name, questions: exam.items.length, model: o.model, adapter: o.adapter ?? null, bootstrap: { resamples, seed }, figures, items: scored.items }, null, 2) + '\n');
        return;
      }
      const { examTable } = await import('../exam-table.ts');
      process.stdout.write(examTable(exam.name, exam.items.length, model, figs));
    });
}
