// `fedlora privacy epsilon|noise`: the RDP accountant (coordinator/privacy/rdp.ts) from the CLI;
// `fedlora privacy audit`: the canary audit (cli/privacy-audit/).
import type { CliGroups } from '../groups.ts';
import { fail } from '../../shared/errors.ts';
import { computeEpsilon, findNoiseMultiplier } from '../../coordinator/privacy/rdp.ts';
import { DEFAULT_CANARY_FORMAT, parseCanaryFormat } from '../../site-agent/data/synth/canaries.ts';

function num(flag: string, raw: unknown, check: (x: number) => boolean, want: string): number {
  const x = typeof raw === 'string' && raw.trim() !== '' ? Number(raw) : NaN;
  if (!Number.isFinite(x) || !check(x)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `--${flag}: expected ${want}, got ${JSON.stringify(raw ?? null)}`);
  return x;
}

interface Common { sampleRate: string; rounds: string; delta: string; json?: boolean }
function common(o: Common) {
  return {
    sampleRate: num('sample-rate', o.sampleRate, (x) => x > 0 && x <= 1, 'a number in (0, 1]'),
    steps: num('rounds', o.rounds, (x) => Number.isInteger(x) && x >= 0, 'a non-negative integer'),
    delta: num('delta', o.delta, (x) => x > 0 && x < 1, 'a number in (0, 1)'),
  };
}

export function register(g: CliGroups): void {
  g.privacy
    .command('epsilon')
    .description('epsilon of DP-FedAvg after T rounds (RDP accountant, Poisson-subsampled Gaussian)')
    .requiredOption('--noise-multiplier <z>', 'noise multiplier z (noise std = z * clip norm / expected sites)')
    .requiredOption('--sample-rate <q>', 'probability that a site takes part in a round')
    .requiredOption('--rounds <T>', 'number of rounds')
    .requiredOption('--delta <d>', 'target delta')
    .option('--json', 'print {"epsilon": ..., "order": ...}')
    .action((o: Common & { noiseMultiplier: string }) => {
      const z = num('noise-multiplier', o.noiseMultiplier, (x) => x >= 0, 'a number >= 0');
      const r = computeEpsilon({ noiseMultiplier: z, ...common(o) });
      process.stdout.write(o.json ? JSON.stringify({ epsilon: r.epsilon, order: r.order }) + '\n' : `epsilon = ${r.epsilon.toPrecision(6)} (delta ${o.delta}, optimal RDP order ${r.order})\n`);
    });
  g.privacy
    .command('noise')
    .description('smallest noise multiplier that keeps epsilon <= target after T rounds')
    .requiredOption('--target-epsilon <e>', 'epsilon budget')
    .requiredOption('--sample-rate <q>', 'probability that a site takes part in a round')
    .requiredOption('--rounds <T>', 'number of rounds')
    .requiredOption('--delta <d>', 'target delta')
    .option('--json', 'print {"noise_multiplier": ...}')
    .action((o: Common & { targetEpsilon: string }) => {
      const e = num('target-epsilon', o.targetEpsilon, (x) => x > 0, 'a number > 0');
      const z = findNoiseMultiplier({ targetEpsilon: e, ...common(o) });
      process.stdout.write(o.json ? JSON.stringify({ noise_multiplier: z }) + '\n' : `noise multiplier = ${z.toPrecision(6)} (epsilon <= ${e} at delta ${o.delta})\n`);
    });
  g.privacy
    .command('audit')
    .description('empirical privacy audit: plant canaries in one synthetic hospital, run the federation without and with DP, and measure each canary\'s exposure on the published global adapter')
    .option('--out <dir>', 'output folder (audit.json, both federations with their logs)', 'privacy-audit-out')
    .option('--format <template>', 'canary format, each # one random digit', DEFAULT_CANARY_FORMAT)
    .option('--canaries <n>', 'canaries planted in hospital-1\'s records', '2')
    .option('--repetitions <n>', 'records that carry each canary', '16')
    .option('--held-out <n>', 'canaries of the same format drawn but never planted: the chance baseline of exposure', '2')
    .option('--sites <n>', 'hospitals', '2')
    .option('--rounds <n>', 'federated rounds', '3')
    .option('--records <n>', 'synthetic records per hospital', '50')
    .option('--local-steps <n>', 'local training steps per round', '40')
    .option('--learning-rate <lr>', 'local learning rate', '0.01')
    .option('--lm-head-std <s>', 'std of the tiny base model\'s output head (0.02 = HF init: too flat to memorise anything)', '0.3')
    .option('--clip-norm <c>', 'DP clip norm of the DP run', '0.5')
    .option('--noise-multiplier <z>', 'DP noise multiplier of the DP run', '1.0')
    .option('--sample-rate <q>', 'DP: probability that a hospital takes part in a round', '1')
    .option('--exhaustive-up-to <n>', 'score every candidate when the format has at most this many', '10000')
    .option('--samples <n>', 'candidates sampled per canary when the format has more', '4096')
    .option('--seed <n>', 'seed of the data, canaries and model', '7')
    .option('--json', 'print audit.json instead of the table')
    .action(async (o) => {
      const { runPrivacyAudit } = await import('../privacy-audit/run-audit.ts');
      const { printAudit } = await import('../privacy-audit/print.ts');
      parseCanaryFormat(o.format);
      const int = (flag: string, raw: unknown, min: number) => num(flag, raw, (x) => Number.isInteger(x) && x >= min, `an integer >= ${min}`);
      const log = (l: string) => (o.json ? process.stderr : process.stdout).write(l + '\n');
      const { report, reportFile } = await runPrivacyAudit({
        out: o.out,
        sites: int('sites', o.sites, 1), rounds: int('rounds', o.rounds, 1), records: int('records', o.records, 20),
        localSteps: int('local-steps', o.localSteps, 1), seed: int('seed', o.seed, 0),
        learningRate: num('learning-rate', o.learningRate, (x) => x > 0, 'a number > 0'),
        lmHeadStd: num('lm-head-std', o.lmHeadStd, (x) => x > 0, 'a number > 0'),
        canaries: { format: o.format, count: int('canaries', o.canaries, 1), repetitions: int('repetitions', o.repetitions, 1), heldOut: int('held-out', o.heldOut, 0) },
        dp: {
          clipNorm: num('clip-norm', o.clipNorm, (x) => x > 0, 'a number > 0'),
          noiseMultiplier: num('noise-multiplier', o.noiseMultiplier, (x) => x >= 0, 'a number >= 0'),
          sampleRate: num('sample-rate', o.sampleRate, (x) => x > 0 && x <= 1, 'a number in (0, 1]'),
        },
        exposure: { exhaustiveUpTo: int('exhaustive-up-to', o.exhaustiveUpTo, 0), samples: int('samples', o.samples, 1) },
        log,
      });
      if (o.json) process.stdout.write(JSON.stringify(report, null, 2) + '\n');
      else {
        printAudit(report, log);
        log(`report → ${reportFile}`);
      }
    });
}
