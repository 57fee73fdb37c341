// `fedlora demo`: the one-command consortium on localhost (see cli/demo/run-demo.ts).
import type { CliGroups } from '../groups.ts';
import { fail } from '../../shared/errors.ts';
import { DEMO_DEFAULTS as D } from '../demo/options.ts';

export function register(g: CliGroups): void {
  g.program
    .command('demo')
    .description('run a whole consortium on this machine: CA, coordinator and N hospital site agents as separate processes, real LoRA training over mutual-TLS gRPC')
    .option('--sites <n>', 'hospitals', String(D.sites))
    .option('--rounds <n>', 'federated rounds', String(D.rounds))
    .option('--out <dir>', 'output folder (report.json, logs, every site folder)', 'demo-out')
    .option('--records <n>', 'synthetic records per hospital', String(D.records))
    .option('--local-steps <n>', 'local training steps per round', String(D.localSteps))
    .option('--small-site <n>', 'records of the last hospital, a small one (0: every hospital has --records)', String(D.smallSite ?? 0))
    .option('--shared-per-diagnosis <n>', 'cases per diagnosis in the consortium-wide balanced test set every hospital scores (0: none)', String(D.sharedPerDiagnosis ?? 0))
    .option('--learning-rate <x>', 'local learning rate', String(D.learningRate))
    .option('--seed <n>', 'seed of the model, the records and the training', String(D.seed))
    .option('--arch <a>', 'llama | qwen2', D.arch)
    .option('--lang <l>', 'en | zh | mixed', D.lang)
    .option('--skew <x>', 'non-IID skew of department mixes, 0..1', String(D.skew))
    .option('--aggregation <name>', 'fedavg | fedprox | fedadam | fedyogi | fedit | ffa | svd | median | trimmed_mean ...', D.aggregation)
    .option('--freeze-a', 'freeze A from the shared seed and send only B (exact aggregation)', D.freezeA)
    .option('--dp', 'DP-FedAvg: clip each site update and add Gaussian noise at the coordinator', D.dp !== null)
    .option('--clip-norm <c>', 'DP clip norm', '1.0')
    .option('--noise-multiplier <z>', 'DP noise multiplier', '0.5')
    .option('--epsilon-budget <e>', 'DP budget of the job', '100')
    .option('--sample-rate <q>', 'with --dp: each round samples every hospital independently with probability q (Poisson sampling; the accountant charges q)', '1')
    .option('--secure-aggregation', 'secure aggregation (the coordinator sees only the sum)', D.secureAggregation)
    .option('--no-cross-eval', 'skip the cross-site evaluation after the job')
    .option('--continue-rounds <k>', 'after the job: new records at every hospital, then `fedlora job continue --rounds K` (a new data period)', '0')
    .option('--new-records <n>', 'with --continue-rounds: new synthetic records per hospital (another department mix)', '80')
    .option('--replay-fraction <f>', 'train.replay_fraction: the share of earlier records in a later period\'s training set', '0.25')
    .option('--personal-steps <n>', "each hospital's personalised adapter: this many local steps on every global version, evaluated beside global and local-only (0: none)", String(D.personalSteps))
    .option('--keep-running', 'leave the coordinator and sites running after the report (Ctrl-C stops them)', D.keepRunning)
    .action(async (o) => {
      const { runDemo } = await import('../demo/run-demo.ts');
      const int = (v: string, name: string, min: number) => {
        const n = Number(v);
        if (!Number.isInteger(n) || n < min) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `--${name} must be an integer >= ${min}, got ${v}`);
        return n;
      };
      const q = Number(o.sampleRate);
      if (!(q > 0 && q <= 1)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `--sample-rate must be a number in (0, 1], got ${o.sampleRate}`);
      if (q < 1 && !o.dp) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', '--sample-rate samples hospitals for DP-FedAvg: add --dp');
      if (o.arch !== 'llama' && o.arch !== 'qwen2') throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `--arch must be llama or qwen2, got ${o.arch}`);
      const replayFraction = (v: string) => {
        const f = Number(v);
        if (!(f >= 0 && f < 1)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `--replay-fraction must be a number in [0, 1), got ${v}`);
        return f;
      };
      const t0 = Date.now();
      const r = await runDemo({
        ...D,
        sites: int(o.sites, 'sites', 1),
        rounds: int(o.rounds, 'rounds', 1),
        records: int(o.records, 'records', 20),
        localSteps: int(o.localSteps, 'local-steps', 1),
        smallSite: int(o.smallSite, 'small-site', 0) || null,
        sharedPerDiagnosis: int(o.sharedPerDiagnosis, 'shared-per-diagnosis', 0),
        learningRate: Number(o.learningRate),
        seed: int(o.seed, 'seed', 0),
        out: o.out,
        arch: o.arch,
        lang: o.lang,
        skew: Number(o.skew),
        aggregation: o.aggregation,
        freezeA: o.freezeA || o.aggregation === 'ffa',
        dp: o.dp ? { clipNorm: Number(o.clipNorm), noiseMultiplier: Number(o.noiseMultiplier), budget: Number(o.epsilonBudget), sampleRate: q } : null,
        secureAggregation: o.secureAggregation,
        keepRunning: o.keepRunning,
        crossEval: o.crossEval,
        personalSteps: int(o.personalSteps, 'personal-steps', 0),
        continuation: int(o.continueRounds, 'continue-rounds', 0) > 0
          ? { rounds: int(o.continueRounds, 'continue-rounds', 0), records: int(o.newRecords, 'new-records', 20), replayFraction: replayFraction(o.replayFraction) }
          : null,
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
