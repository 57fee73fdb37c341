// `fedlora privacy audit` end to end, as a consortium runs it: the CLI runs the demo's federation
// (coordinator and two hospitals as separate processes over mutual-TLS gRPC) without and with
// DP on the same synthetic records, hospital-1's carrying canaries, and measures each canary's
// exposure on both published global adapters and on the base model. Without DP the adapter
// memorises the canaries (exposure far above the base model's); with DP (clipped updates, noise
// at multiplier 1) the mean exposure is lower, and audit.json carries the ledger's epsilon.
import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { computeEpsilon } from '../../coordinator/privacy/rdp.ts';
import type { AuditReport } from '../../cli/privacy-audit/run-audit.ts';

const BIN = join(import.meta.dirname, '..', '..', 'cli', 'bin.mjs');

function fedlora(args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((res) => {
    const p = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    p.on('exit', (code) => res({ code, out, err }));
  });
}

// Sizes chosen so that memorisation is measurable on a tiny model in a few minutes (README,
// "What the privacy audit measured"): few canaries, each in many of hospital-1's records.
const SETTINGS = {
  canaries: 2, repetitions: 16, sites: 2, rounds: 3, records: 50, localSteps: 40, learningRate: 0.01,
  clipNorm: 0.5, noiseMultiplier: 1, sampleRate: 1,
};

describe('fedlora privacy audit', () => {
  it('exposure of the canaries on the global adapter: lower with DP than without, beside the ledger\'s epsilon', async () => {
    const out = join(mkdtempSync(join(tmpdir(), 'fedlora-audit-')), 'audit');
    const s = SETTINGS;
    const r = await fedlora([
      'privacy', 'audit', '--out', out, '--canaries', String(s.canaries), '--repetitions', String(s.repetitions),
      '--sites', String(s.sites), '--rounds', String(s.rounds), '--records', String(s.records), '--local-steps', String(s.localSteps),
      '--learning-rate', String(s.learningRate), '--clip-norm', String(s.clipNorm), '--noise-multiplier', String(s.noiseMultiplier),
      '--sample-rate', String(s.sampleRate), '--samples', '2000',
    ]);
    expect(r.code, r.err).toBe(0);
    const rep = JSON.parse(readFileSync(join(out, 'audit.json'), 'utf8')) as AuditReport;
    // the table the operator reads
    expect(r.out).toContain('canary format "Reference code ##-####": 1000000 candidates, rank estimated from 2000 sampled candidates');
    expect(r.out).toMatch(/mean exposure: base \d+\.\d\d, no DP \d+\.\d\d, DP \d+\.\d\d bits/);
    expect(r.out).toMatch(/mean exposure of 2 held-out canaries \(never planted: what chance gives\): base \d+\.\d\d, no DP \d+\.\d\d, DP \d+\.\d\d bits/);
    expect(r.out).toContain(`report → ${join(out, 'audit.json')}`);

    expect(rep.candidate_space).toBe(1e6);
    expect(rep.canaries).toHaveLength(s.canaries);
    // held-out canaries (the CLI's default 2): drawn like the planted ones, never planted, scored in their contexts
    expect(rep.held_out).toHaveLength(2);
    for (const h of rep.held_out) expect(rep.canaries.map((c) => c.text)).not.toContain(h.text);
    expect(rep.held_out.map((h) => h.context)).toEqual(rep.canaries.map((c) => c.context));
    // every canary reached hospital-1's training set (de-identification left it alone)
    for (const c of rep.canaries) expect(c.copies_in_training).toBeGreaterThan(0);
    const by = (a: string) => rep.arms.find((x) => x.arm === a)!;
    const [base, noDp, dp] = [by('base'), by('no_dp'), by('dp')];
    for (const a of [base, noDp, dp]) {
      expect(a.exposure.canaries.map((c) => c.text)).toEqual(rep.canaries.map((c) => c.text));
      expect(a.held_out_exposure.canaries.map((c) => c.text)).toEqual(rep.held_out.map((c) => c.text));
      for (const c of [...a.exposure.canaries, ...a.held_out_exposure.canaries]) expect(c.exposure).toBeCloseTo(Math.log2(1e6) - Math.log2(c.rank), 10);
    }
    // the DP run's epsilon is the ledger's, which is the accountant's for (z, q, rounds, delta)
    expect(noDp.epsilon).toBeNull();
    expect(dp.epsilon).toBe(computeEpsilon({ noiseMultiplier: s.noiseMultiplier, sampleRate: s.sampleRate, steps: s.rounds, delta: 1e-5 }).epsilon);
    expect(noDp.adapter_sha256).not.toBe(dp.adapter_sha256);
    // memorisation is measurable without DP: far above what the base model gives the canaries
    expect(noDp.exposure.mean_exposure).toBeGreaterThan(base.exposure.mean_exposure + 4);
    // the assertion of the audit: DP lowers the canaries' exposure, on average over canaries
    expect(dp.exposure.mean_exposure).toBeLessThan(noDp.exposure.mean_exposure);
  }, 1_800_000);
});
