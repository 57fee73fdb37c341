// `fedlora privacy audit`: an empirical check of what the DP guarantee buys. The same
// federation (the demo's: coordinator and hospitals as separate processes over mutual-TLS gRPC,
// same seed, same synthetic records) runs twice, without and with DP, with canaries planted in
// hospital-1's records; each canary's exposure is then measured on the published global adapter
// of each run and on the base model (exposure.ts), beside the ε the DP run's ledger claims.
// Each canary is scored after the text that preceded it in hospital-1's training file. Held-out
// canaries (drawn like the planted ones, never planted) are scored in the same contexts: no model
// has seen them, so their rank among the candidates is uniform and their exposure is what chance
// gives (at most 1/ln 2 ≈ 1.44 bits on average) — the baseline a planted canary's exposure is
// read against.

import { readFileSync, writeFileSync, existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fail } from '../../shared/errors.ts';
import { canarySecrets, fillCanary, parseCanaryFormat } from '../../site-agent/data/synth/canaries.ts';
import { downloadAdapter } from '../../coordinator/http/client.ts';
import { loadModel } from '../../site-agent/engine/index.ts';
import { runDemo, DEMO_DEFAULTS } from '../demo/run-demo.ts';
import { measureExposure, type ExposureResult } from './exposure.ts';

export interface AuditOptions {
  out: string;
  sites: number;
  rounds: number;
  records: number;
  localSteps: number;
  learningRate: number;
  /** Std of the tiny base model's lm_head (TinyModelOptions.lmHeadStd): at HF's 0.02 its
   *  predictions stay near-uniform and nothing is memorised, with or without DP. */
  lmHeadStd: number;
  seed: number;
  /** heldOut: canaries of the same format drawn but never planted (scored in the planted ones' contexts, in turn). */
  canaries: { format: string; count: number; repetitions: number; heldOut: number };
  dp: { clipNorm: number; noiseMultiplier: number; sampleRate: number };
  /** Enumerate the candidate space up to this size, else sample `samples` candidates. */
  exposure: { exhaustiveUpTo: number; samples: number };
  log: (line: string) => void;
}

export interface AuditArm {
  /** 'base' (the model before the job), 'no_dp' or 'dp'. */
  arm: 'base' | 'no_dp' | 'dp';
  job: string | null;
  /** The published version measured (the job's last). */
  version: number | null;
  adapter_sha256: string | null;
  /** The DP ledger's ε after the last round (dp only), at `delta`. */
  epsilon: number | null;
  /** The planted canaries. */
  exposure: ExposureResult;
  /** The held-out canaries (never planted), on the same model. */
  held_out_exposure: ExposureResult;
}

export interface AuditReport {
  format: string;
  candidate_space: number;
  federation: { sites: number; rounds: number; records_per_site: number; local_steps: number; learning_rate: number; lm_head_std: number; seed: number };
  dp: { clip_norm: number; noise_multiplier: number; sample_rate: number; delta: number };
  /** Each canary and how many training examples of hospital-1 carried it (after de-identification). */
  canaries: { text: string; copies_in_training: number; context: string }[];
  /** Canaries of the same format never planted, each with the context it was scored in. */
  held_out: { text: string; context: string }[];
  arms: AuditArm[];
}

const DELTA = 1e-5;

/** Copies of each text among the lines of a site's training file (the examples the engine learned from). */
function countCopies(trainFile: string, texts: string[]): number[] {
  if (!existsSync(trainFile)) throw fail('FEDLORA_ERR_NOT_FOUND', `privacy audit: ${trainFile} is missing: the site never built its training set`);
  const lines = readFileSync(trainFile, 'utf8').split('\n');
  return texts.map((t) => lines.filter((l) => l.includes(t)).length);
}

/** The text before `canary` on its line in the first training example that carries it: the
 *  context in which the engine learned it ('' when no example carries it). */
function contextOf(trainFile: string, canary: string): string {
  for (const line of readFileSync(trainFile, 'utf8').split('\n')) {
    if (!line.includes(canary)) continue;
    const ex = JSON.parse(line) as { messages?: { content: string }[] };
    const msg = ex.messages?.find((m) => m.content.includes(canary));
    if (!msg) continue;
    const at = msg.content.indexOf(canary);
    return msg.content.slice(msg.content.lastIndexOf('\n', at) + 1, at);
  }
  return '';
}

async function runArm(o: AuditOptions, arm: 'no_dp' | 'dp', dir: string) {
  const log = (l: string) => o.log(`[${arm === 'dp' ? 'DP' : 'no DP'}] ${l}`);
  const d = await runDemo({
    ...DEMO_DEFAULTS,
    sites: o.sites, rounds: o.rounds, records: o.records, localSteps: o.localSteps, learningRate: o.learningRate, lmHeadStd: o.lmHeadStd, seed: o.seed,
    out: dir, crossEval: false, assistant: false, localBaseline: false, personalSteps: 0,
    // the canary measurements were made with this mix (the demo's default skew is tuned for the diagnosis task)
    skew: 0.8,
    // A budget the job cannot reach: the audit measures the ε of the settings, the ledger reports it.
    dp: arm === 'dp' ? { clipNorm: o.dp.clipNorm, noiseMultiplier: o.dp.noiseMultiplier, sampleRate: o.dp.sampleRate, budget: 1e9 } : null,
    canaries: { format: o.canaries.format, count: o.canaries.count, repetitions: o.canaries.repetitions, site: 0, seed: o.seed },
    log,
  });
  try {
    const last = d.report.rounds.at(-1);
    if (!last?.adapter) throw fail('FEDLORA_ERR_JOB_STATE', `privacy audit: job ${d.jobId} published no adapter`);
    const adapterDir = join(dir, 'global-adapter');
    const { sha256 } = await downloadAdapter({ url: d.httpUrl, token: d.adminToken }, d.jobId, last.adapter.version, adapterDir);
    const trainFile = join(d.siteDirs[0], 'datasets', 'train.jsonl');
    const copies = countCopies(trainFile, d.canaries.map((c) => c.text));
    const contexts = d.canaries.map((c) => contextOf(trainFile, c.text));
    return { job: d.jobId, version: last.adapter.version, sha256, epsilon: last.epsilon, adapterDir, modelDir: join(dir, 'model'), canaries: d.canaries, copies, contexts };
  } finally {
    await d.stop();
  }
}

/** Canaries [from, to) of an exposure result, with their own mean. */
function subset(r: ExposureResult, from: number, to: number): ExposureResult {
  const canaries = r.canaries.slice(from, to);
  return { ...r, canaries, mean_exposure: canaries.reduce((s, c) => s + c.exposure, 0) / Math.max(1, canaries.length) };
}

export async function runPrivacyAudit(o: AuditOptions): Promise<{ report: AuditReport; reportFile: string }> {
  const out = resolve(o.out);
  if (existsSync(out) && readdirSync(out).length > 0) {
    if (!existsSync(join(out, '.fedlora-privacy-audit'))) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `--out ${out} exists and is not an earlier audit folder; choose an empty or new folder`);
    rmSync(out, { recursive: true, force: true });
  }
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, '.fedlora-privacy-audit'), new Date().toISOString());
  const noDp = await runArm(o, 'no_dp', join(out, 'no-dp'));
  const dp = await runArm(o, 'dp', join(out, 'dp'));
  if (noDp.canaries.map((c) => c.text).join('\n') !== dp.canaries.map((c) => c.text).join('\n')) {
    throw fail('FEDLORA_ERR_INTERNAL', 'privacy audit: the two runs planted different canaries (same seed expected)');
  }
  const secrets = noDp.canaries.map((c) => c.secret);
  // The planted canaries are the first `count` of the seed's draw (plantCanaries); the held-out ones the next.
  const f = parseCanaryFormat(o.canaries.format);
  const heldOut = canarySecrets(f, o.canaries.count + o.canaries.heldOut, o.seed).slice(o.canaries.count);
  if (heldOut.some((h) => secrets.includes(h))) throw fail('FEDLORA_ERR_INTERNAL', 'privacy audit: a held-out canary was planted (the seed\'s draw changed)');
  const heldOutContexts = heldOut.map((_, k) => noDp.contexts[k % noDp.contexts.length]);
  const measure = async (modelDir: string, adapter?: string) => {
    const model = await loadModel(modelDir, adapter ? { adapter } : {});
    try {
      // one run for both sets: candidates are scored once per context
      const all = await measureExposure(model, {
        format: o.canaries.format, secrets: [...secrets, ...heldOut], contexts: [...noDp.contexts, ...heldOutContexts],
        exhaustiveUpTo: o.exposure.exhaustiveUpTo, samples: o.exposure.samples, seed: o.seed,
      });
      return { exposure: subset(all, 0, secrets.length), held_out_exposure: subset(all, secrets.length, all.canaries.length) };
    } finally {
      await model.release();
    }
  };
  o.log('exposure of each canary: base model, global adapter without DP, global adapter with DP');
  const arms: AuditArm[] = [
    { arm: 'base', job: null, version: null, adapter_sha256: null, epsilon: null, ...(await measure(noDp.modelDir)) },
    { arm: 'no_dp', job: noDp.job, version: noDp.version, adapter_sha256: noDp.sha256, epsilon: null, ...(await measure(noDp.modelDir, noDp.adapterDir)) },
    { arm: 'dp', job: dp.job, version: dp.version, adapter_sha256: dp.sha256, epsilon: dp.epsilon, ...(await measure(dp.modelDir, dp.adapterDir)) },
  ];
  const report: AuditReport = {
    format: o.canaries.format,
    candidate_space: arms[0].exposure.candidate_space,
    federation: { sites: o.sites, rounds: o.rounds, records_per_site: o.records, local_steps: o.localSteps, learning_rate: o.learningRate, lm_head_std: o.lmHeadStd, seed: o.seed },
    dp: { clip_norm: o.dp.clipNorm, noise_multiplier: o.dp.noiseMultiplier, sample_rate: o.dp.sampleRate, delta: DELTA },
    canaries: noDp.canaries.map((c, i) => ({ text: c.text, copies_in_training: noDp.copies[i], context: noDp.contexts[i] })),
    held_out: heldOut.map((h, k) => ({ text: fillCanary(f, h), context: heldOutContexts[k] })),
    arms,
  };
  const reportFile = join(out, 'audit.json');
  writeFileSync(reportFile, JSON.stringify(report, null, 2) + '\n');
  return { report, reportFile };
}
