// `fedlora demo`: the one-command consortium on localhost (see cli/demo/run-demo.ts).
import type { CliGroups } from '../groups.ts';
import { fail } from '../../shared/errors.ts';

export function register(g: CliGroups): void {
  g.program
    .command('demo')
    .description('run a whole consortium on this machine: CA, coordinator and N hospital site agents as separate processes, real LoRA training over mutual-TLS gRPC')
    .option('--sites <n>', 'hospitals', '3')
    .option('--rounds <n>', 'federated rounds', '3')
    .option('--out <dir>', 'output folder (report.json, logs, every site folder)', 'demo-out')
    .option('--records <n>', 'synthetic records per hospital', '120')
    .option('--local-steps <n>', 'local training steps per round', '12')
    .option('--arch <a>', 'llama | qwen2', 'llama')
    .option('--lang <l>', 'en | zh | mixed', 'en')
    .option('--skew <x>', 'non-IID skew of department mixes, 0..1', '0.8')
    .option('--aggregation <name>', 'fedavg | fedprox | fedadam | fedyogi | fedit | ffa | svd | median | trimmed_mean ...', 'fedavg')
    .option('--freeze-a', 'freeze A from the shared seed and send only B (exact aggregation)', false)
    .option('--dp', 'DP-FedAvg: clip each site update and add Gaussian noise at the coordinator', false)
    .option('--clip-norm <c>', 'DP clip norm', '1.0')
    .option('--noise-multiplier <z>', 'DP noise multiplier', '0.5')
    .option('--epsilon-budget <e>', 'DP budget of the job', '100')
    .option('--secure-aggregation', 'secure aggregation (the coordinator sees only the sum)', false)
    .option('--no-cross-eval', 'skip the cross-site evaluation after the job')
    .option('--keep-running', 'leave the coordinator and sites running after the report (Ctrl-C stops them)', false)
    .action(async (o) => {
      const { runDemo, DEMO_DEFAULTS } = await import('../demo/run-demo.ts');
      const int = (v: string, name: string, min: number) => {
        const n = Number(v);
        if (!Number.isInteger(n) || n < min) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `--${name} must be an integer >= ${min}, got ${v}`);
        return n;
      };
      if (o.arch !== 'llama' && o.arch !== 'qwen2') throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `--arch must be llama or qwen2, got ${o.arch}`);
      const t0 = Date.now();
      const r = await runDemo({
        ...DEMO_DEFAULTS,
        sites: int(o.sites, 'sites', 1),
        rounds: int(o.rounds, 'rounds', 1),
        records: int(o.records, 'records', 20),
        localSteps: int(o.localSteps, 'local-steps', 1),
        out: o.out,
        arch: o.arch,
        lang: o.lang,
        skew: Number(o.skew),
        aggregation: o.aggregation,
        freezeA: o.freezeA || o.aggregation === 'ffa',
        dp: o.dp ? { clipNorm: Number(o.clipNorm), noiseMultiplier: Number(o.noiseMultiplier), budget: Number(o.epsilonBudget) } : null,
        secureAggregation: o.secureAggregation,
        keepRunning: o.keepRunning,
        crossEval: o.crossEval,
        log: (l: string) => process.stdout.write(l + '\n'),
      });
      process.stdout.write(`demo finished in ${((Date.now() - t0) / 1000).toFixed(0)} s\n`);
      if (o.keepRunning) {
        process.stdout.write('coordinator and sites keep running; Ctrl-C to stop\n');
        await new Promise<void>((done) => process.once('SIGINT', () => done()));
      }
      await r.stop();
    });
}
