// `fedlora privacy epsilon|noise`: the RDP accountant (coordinator/privacy/rdp.ts) from the CLI.
import type { CliGroups } from '../groups.ts';
import { fail } from '../../shared/errors.ts';
import { computeEpsilon, findNoiseMultiplier } from '../../coordinator/privacy/rdp.ts';

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
}
