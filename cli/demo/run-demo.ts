// `fedlora demo`: a whole consortium on one machine, as separate processes talking real
// mutual-TLS gRPC on localhost — a coordinator and N hospital site agents, each with its own
// folder, certificate and synthetic non-IID records, training a tiny DeepSeek-architecture
// model with LoRA. Every step is the same CLI command an operator or site admin would run.

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, existsSync, rmSync, readdirSync, writeFileSync, openSync, readFileSync } from 'node:fs';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { fail } from '../../shared/errors.ts';
import { initTinyModel, computeModelManifest } from '../../site-agent/engine/index.ts';
import { generateSites } from '../../site-agent/data/synth/generate.ts';
import type { PlantedCanary } from '../../site-agent/data/synth/canaries.ts';
import { generateBalancedSet, writeBalancedSet } from '../../site-agent/data/synth/balanced-set.ts';
import { buildReport, printReport } from './report.ts';
import { freePort } from '../../shared/free-port.ts';
import { demoServeConfig, showDemoAssistant, type DemoAssistant } from './assistant.ts';
import type { DemoOptions } from './options.ts';

const BIN = join(dirname(fileURLToPath(import.meta.url)), '..', 'bin.mjs');

// The demo's options and their defaults live in ./options.ts (the CLI's option defaults read them too).
export { DEMO_DEFAULTS, type DemoOptions } from './options.ts';

/** Options per multiple-choice item (data.choices.k's default): chance is 1 / CHOICES. */
export const CHOICES = 4;
/** LoRA rank of the demo job's diagnosis task (alpha the same: scale 1). */
export const DEMO_LORA_RANK = 32;
/** The distillation demo's teacher: a folder name in each hospital's model.teachers_dir. */
export const DEMO_TEACHER = 'tiny-teacher';

/** The two tasks' models, prompts, fields and evaluation. The diagnosis task: the hospitals train on
 *  the findings of the note (complaint and examination) with the diagnosis as the whole answer, and
 *  multiple-choice items ask in the training prompt's own words, scoring each diagnosis as the answer
 *  (data.choices.format cloze), so what a round learns is what the items measure; the tiny model's
 *  weights at std 1/sqrt(64) (with HF's 0.02 its frozen head cannot make a confident prediction and
 *  LoRA alone learns nothing in a few minutes). The case-note task is the demo as it was before. */
const TASKS = {
  diagnosis: {
    model: { layers: 2, hidden: 64, heads: 4, kvHeads: 2, intermediate: 128, initializerRange: 0.125 },
    fields: ['chiefComplaint', 'exam', 'diagnosis'],
    data: {
      prompt: { lang: 'auto', system: null, userTemplate: 'Chief complaint: {{chiefComplaint}}\nExamination: {{exam}}', assistantTemplate: '{{diagnosis}}' },
      choices: { k: CHOICES, extraDiagnoses: [], format: 'cloze' },
      split: { seed: 1234, train: 0.6, validation: 0.1, test: 0.3 },
    },
    evaluation: { min_items: 5, max_items: 40, evaluate_base: false, generate_items: 3 },
    loraRank: DEMO_LORA_RANK,
    loraAlpha: DEMO_LORA_RANK,
    batchTokens: 1024,
  },
  'case-note': {
    model: { layers: 2, hidden: 64, heads: 4, kvHeads: 2, intermediate: 128 },
    fields: ['department', 'chiefComplaint', 'exam', 'labs', 'diagnosis', 'treatment'],
    data: null,
    evaluation: { min_items: 5, max_items: 24, evaluate_base: false, generate_items: 6 },
    loraRank: 8,
    loraAlpha: 16,
    batchTokens: 2048,
  },
} as const;

/** Settings a strategy cannot do without, for the demo's --aggregation flag. */
const AGGREGATION_DEFAULTS: Record<string, Record<string, number>> = {
  fedprox: { mu: 0.01 },
  trimmed_mean: { beta: 0.2 },
  multi_krum: { f: 0 },
  norm_bound: { max_norm: 1 },
};

/** Run one CLI command to completion; returns stdout. */
function cli(args: string[], logFile: string, env: NodeJS.ProcessEnv = {}): Promise<string> {
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('exit', (code) => {
      writeFileSync(logFile, `$ fedlora ${args.join(' ')}\n${out}${err}\n`, { flag: 'a' });
      if (code === 0) res(out);
      else rej(fail('FEDLORA_ERR_INTERNAL', `fedlora ${args.join(' ')} exited with ${code}: ${err.trim().split('\n').slice(-3).join(' | ')} (log: ${logFile})`));
    });
  });
}

/** Start a long-running CLI process with its output in a log file. */
function daemon(args: string[], logFile: string): ChildProcess {
  const fd = openSync(logFile, 'a');
  return spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', fd, fd], env: { ...process.env, FEDLORA_LOG_LEVEL: process.env.FEDLORA_LOG_LEVEL ?? 'info' } });
}

async function waitFor<T>(what: string, timeoutMs: number, fn: () => Promise<T | null>, procs: { p: ChildProcess; log: string }[] = []): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const dead = procs.find((x) => x.p.exitCode !== null || x.p.signalCode !== null);
    if (dead) {
      const tail = existsSync(dead.log) ? readFileSync(dead.log, 'utf8').trim().split('\n').slice(-5).join('\n  ') : '';
      throw fail('FEDLORA_ERR_UNAVAILABLE', `demo: a process exited (${dead.p.exitCode ?? dead.p.signalCode}) while waiting for ${what}; ${dead.log}:\n  ${tail}`);
    }
    const v = await fn().catch(() => null);
    if (v !== null) return v;
    if (Date.now() > until) throw fail('FEDLORA_ERR_UNAVAILABLE', `demo: timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 300));
  }
}

export interface DemoResult {
  jobId: string;
  httpUrl: string;
  /** The admin token `coordinator init` made (every API read needs a token). */
  adminToken: string;
  reportFile: string;
  report: Awaited<ReturnType<typeof buildReport>>;
  /** Hospital-1's assistant and the example answer the demo printed (null without o.assistant). */
  assistant: DemoAssistant | null;
  /** Each hospital's folder, in order (hospital-1 first). */
  siteDirs: string[];
  /** The canaries planted (o.canaries), in the records of hospital o.canaries.site + 1. */
  canaries: PlantedCanary[];
  stop(): Promise<void>;
}

export async function runDemo(o: DemoOptions): Promise<DemoResult> {
  const out = resolve(o.out);
  if (existsSync(out) && readdirSync(out).length > 0) {
    if (!existsSync(join(out, '.fedlora-demo'))) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `--out ${out} exists and is not an earlier demo folder; choose an empty or new folder`);
    rmSync(out, { recursive: true, force: true });
  }
  mkdirSync(join(out, 'logs'), { recursive: true });
  writeFileSync(join(out, '.fedlora-demo'), new Date().toISOString());
  const logs = join(out, 'logs');
  const children: ChildProcess[] = [];
  const watched: { p: ChildProcess; log: string }[] = [];
  // If this process ends while the demo runs (Ctrl-C, or a test runner giving up on it), its
  // coordinator and sites must not be left running.
  const killChildren = () => { for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL'); };
  process.once('exit', killChildren);
  const start = (args: string[], log: string) => {
    const p = daemon(args, log);
    children.push(p);
    watched.push({ p, log });
  };
  const stopAll = async () => {
    process.off('exit', killChildren);
    await Promise.all(
      children.map(
        (c) =>
          new Promise<void>((r) => {
            if (c.exitCode !== null || c.signalCode !== null) return r();
            c.once('exit', () => r());
            c.kill('SIGTERM');
            setTimeout(() => c.kill('SIGKILL'), 15_000).unref();
          }),
      ),
    );
  };
  try {
    // 1. The base model: a tiny DeepSeek-architecture checkpoint in exactly the HF layout.
    o.log(`[1/7] tiny ${o.arch} model → ${join(out, 'model')}`);
    const task = o.task ?? (o.canaries ? 'case-note' : 'diagnosis');
    const profile = TASKS[task];
    initTinyModel({ arch: o.arch, out: join(out, 'model'), seed: o.seed, ...profile.model, tokenizer: 'byte', ...(o.lmHeadStd !== undefined ? { lmHeadStd: o.lmHeadStd } : {}) });
    const manifestSha = computeModelManifest(join(out, 'model')).sha256;
    if (o.distill) initTinyModel({ arch: o.arch, out: join(out, 'teachers', DEMO_TEACHER), seed: o.seed + 1, ...profile.model, layers: profile.model.layers + 1, tokenizer: 'byte' });

    // 2. Synthetic hospitals: non-IID department mixes, planted identifiers for the de-identifier.
    // Unequal hospitals (diagnosis task): the last one is small (when there are two or more).
    const small = task === 'diagnosis' ? (o.smallSite ?? null) : null;
    const counts = Array.from({ length: o.sites }, (_, i) => (small !== null && o.sites > 1 && i === o.sites - 1 ? small : o.records));
    o.log(`[2/7] synthetic records for ${o.sites} hospitals (skew ${o.skew}, ${counts.join(' / ')} records)`);
    const synth = generateSites({ sites: o.sites, records: counts, lang: o.lang, skew: o.skew, seed: o.seed, format: 'jsonl', out: join(out, 'data'), canaries: o.canaries });
    // The consortium-wide balanced test set: every diagnosis equally, patients of no hospital.
    const perDx = task === 'diagnosis' ? (o.sharedPerDiagnosis ?? 0) : 0;
    const sharedFile = join(out, 'data', 'consortium-test.jsonl');
    if (perDx > 0) {
      const cases = generateBalancedSet({ perDiagnosis: perDx, lang: o.lang, seed: o.seed + 1 });
      writeBalancedSet(sharedFile, cases);
      o.log(`      consortium-wide balanced test set: ${cases.length} cases (${perDx} per diagnosis) → ${sharedFile}`);
    }

    // 3. The coordinator: CA, server certificate, config, then the service as its own process.
    const [fedPort, enrollPort, httpPort] = [await freePort(), await freePort(), await freePort()];
    const coordDir = join(out, 'coordinator');
    o.log(`[3/7] coordinator: CA + service (federation :${fedPort}, enrollment :${enrollPort}, http :${httpPort})`);
    await cli(['coordinator', 'init', '--data-dir', coordDir, '--federation-port', String(fedPort), '--enrollment-port', String(enrollPort), '--http-port', String(httpPort), '--public-endpoint', `127.0.0.1:${fedPort}`], join(logs, 'setup.log'));
    start(['coordinator', 'start', '--data-dir', coordDir], join(logs, 'coordinator.log'));
    const httpUrl = `http://127.0.0.1:${httpPort}`;
    // Every API read needs a token: the demo reads with the admin token `coordinator init` wrote.
    const token = readFileSync(join(coordDir, 'admin.token'), 'utf8').trim();
    const auth = { headers: { authorization: `Bearer ${token}` } };
    await waitFor('the coordinator HTTP API', 60_000, async () => ((await fetch(`${httpUrl}/api/health`, auth)).ok ? true : null), watched);

    // 4. Each hospital: invite (coordinator side), then enroll, ingest and start (site side).
    // With Poisson sampling a round may aggregate a single sampled hospital (the DP noise, not the
    // crowd, protects it): the hospitals' policy then accepts rounds of one site.
    const sampleRate = o.dp?.sampleRate ?? 1;
    const minSitesPolicy = sampleRate < 1 ? 1 : Math.min(2, o.sites);
    const siteNames: string[] = [];
    const assistantPort = await freePort();
    for (let k = 1; k <= o.sites; k++) {
      const name = `hospital-${k}`;
      siteNames.push(name);
      const siteDir = join(out, 'sites', name);
      const top = topDepartment(synth[k - 1].records.map((r) => r.department));
      o.log(`[4/7] ${name} (mostly ${top}): invite, enroll (key stays in ${siteDir}), ingest + de-identify, start`);
      const token = (await cli(['site', 'invite', '--site', name, '--ttl', '1h', '--data-dir', coordDir, '--enroll-endpoint', `127.0.0.1:${enrollPort}`], join(logs, 'setup.log'))).trim();
      await cli(['site', 'init', '--model', join(out, 'model'), '--site-dir', siteDir, '--min-sites', String(minSitesPolicy)], join(logs, `${name}.log`));
      const cfgFile = join(siteDir, 'site.yaml');
      const cfg = YAML.parse(readFileSync(cfgFile, 'utf8'));
      // The byte-level tokenizer of the tiny model makes one token per byte: keep prompts short by
      // leaving the (identifier-heavy) history out of training, as a site policy may.
      cfg.policy.allow_cross_eval = o.crossEval;
      cfg.policy.allowed_fields = profile.fields;
      if (profile.data) cfg.data = { ...(cfg.data ?? {}), ...profile.data };
      const maxRank = o.siteRanks?.maxLoraRank[name];
      if (maxRank !== undefined) cfg.policy.max_lora_rank = maxRank;
      if (o.distill) cfg.model.teachers_dir = join(out, o.distill.missingAt.includes(name) ? 'no-teachers' : 'teachers');
      cfg.training = { local_baseline: o.localBaseline, personal_steps: o.personalSteps, max_seq_len: 768, max_train_examples: null };
      cfg.evaluation = { ...profile.evaluation, ...(perDx > 0 ? { shared_sets: [{ name: 'consortium', file: sharedFile }] } : {}) };
      // A continued job reports its earlier and new held-out cases apart: held-out sets twice the
      // usual share keep both parts above evaluation.min_items with the demo's few records.
      if (o.continuation) cfg.data = { ...cfg.data, split: { ...(cfg.data?.split ?? {}), seed: 1234, train: 0.6, validation: 0.2, test: 0.2 } };
      cfg.network = { heartbeat_interval_ms: 2000, reconnect_initial_ms: 300, reconnect_max_ms: 5000, chunk_size: 1024 * 1024 };
      cfg.serve = demoServeConfig(assistantPort);
      writeFileSync(cfgFile, YAML.stringify(cfg));
      await cli(['site', 'enroll', '--token', token, '--site-dir', siteDir], join(logs, `${name}.log`));
      await cli(['site', 'ingest', '--format', 'jsonl', '--site-dir', siteDir, synth[k - 1].file!], join(logs, `${name}.log`));
      start(['site', 'start', '--site-dir', siteDir], join(logs, `${name}.log`));
    }
    await waitFor('all sites online', 60_000, async () => {
      const r = (await (await fetch(`${httpUrl}/api/sites`, auth)).json()) as { sites: { id: string; online?: boolean }[] };
      return r.sites.filter((s) => s.online).length >= o.sites ? true : null;
    }, watched);

    // 5. The job: FedAvg (or the chosen strategy) over all sites, a few local steps per round;
    // with --sample-rate q each round Poisson-samples the N = sites hospitals (min_sites 1: a round
    // publishes whatever its sample sent, noise only when nobody was sampled).
    // hospitals whose policy.max_lora_rank is below the job's min_site_r decline every round
    const declining = Object.values(o.siteRanks?.maxLoraRank ?? {}).filter((k) => k < o.siteRanks!.minSiteR).length + (o.distill?.missingAt.length ?? 0);
    const job: Record<string, unknown> = {
      name: `demo: ${o.sites} hospitals, ${o.rounds} rounds`,
      base_model: { id: `fedlora/tiny-${o.arch}`, manifest_sha256: manifestSha, config_path: join(out, 'model', 'config.json') },
      lora: {
        r: profile.loraRank, alpha: profile.loraAlpha, target_modules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], dropout: 0, freeze_a: o.freezeA, init_seed: o.seed,
        ...(o.siteRanks ? { min_site_r: o.siteRanks.minSiteR } : {}),
      },
      rounds: o.rounds,
      train: { local_steps: o.localSteps, learning_rate: o.learningRate, optimizer: 'adamw', batch_tokens: profile.batchTokens, seed: o.seed, warmup_steps: 2, max_grad_norm: 1, replay_fraction: o.continuation?.replayFraction ?? 0,
        ...(o.distill ? { distill: { teacher: DEMO_TEACHER, top_k: o.distill.topK, temperature: o.distill.temperature, alpha: o.distill.alpha } } : {}) },
      min_sites: sampleRate < 1 ? 1 : o.sites - declining,
      max_sites: o.sites,
      round_deadline_s: 900,
      aggregation: { name: o.aggregation, ...AGGREGATION_DEFAULTS[o.aggregation] },
      privacy: {
        secure_aggregation: o.secureAggregation,
        ...(o.dp ? { dp: { clip_norm: o.dp.clipNorm, noise_multiplier: o.dp.noiseMultiplier, delta: 1e-5, epsilon_budget: o.dp.budget, sample_rate: sampleRate } } : {}),
      },
    };
    const jobFile = join(out, 'job.yaml');
    writeFileSync(jobFile, YAML.stringify(job));
    const submitted = await cli(['job', 'submit', jobFile, '--data-dir', coordDir], join(logs, 'setup.log'));
    const jobId = /job (\S+)/.exec(submitted)?.[1];
    if (!jobId) throw fail('FEDLORA_ERR_INTERNAL', `demo: could not read the job id from "${submitted.trim()}"`);
    o.log(`[5/7] job ${jobId} submitted: ${o.rounds} rounds × ${o.localSteps} local steps at each of ${sampleRate < 1 ? `the hospitals sampled (q = ${sampleRate} of ${o.sites})` : `${o.sites} sites`}`);

    // A round (train + evaluate) measured while the job runs is the unit of the waits after it:
    // a busy machine is slower, not wrong.
    let roundMs = 0;
    let lastVersion = await awaitJob(jobId, 0);

    // A new quarter's records at every hospital (hospital k now sees hospital k+1's department
    // mix), then a new data period: new records with a replay sample of earlier ones.
    if (o.continuation) {
      const c = o.continuation;
      const next = generateSites({ sites: o.sites + 1, records: c.records, lang: o.lang, skew: o.skew, seed: o.seed + 1000, format: 'jsonl', out: join(out, 'data-period-1') });
      for (let k = 1; k <= o.sites; k++) {
        await cli(['site', 'ingest', '--format', 'jsonl', '--site-dir', join(out, 'sites', `hospital-${k}`), next[k].file!], join(logs, `hospital-${k}.log`));
      }
      const said = await cli(['job', 'continue', jobId, '--rounds', String(c.rounds), '--data-dir', coordDir], join(logs, 'setup.log'));
      o.log(`      ${c.records} new records at each hospital (another department mix); ${said.trim()}, replay fraction ${c.replayFraction}`);
      lastVersion = await awaitJob(jobId, lastVersion);
    }

    /** Wait until the job (or its continuation from version `from`) completes and its sites
     *  reported the final evaluations; returns the last version. */
    async function awaitJob(jobId: string, from: number): Promise<number> {
      let lastSeen = -1;
      const jobStarted = Date.now();
      const final = await waitFor('the job to finish', 60 * 60_000, async () => {
        const j = (await (await fetch(`${httpUrl}/api/jobs/${jobId}`, auth)).json()) as { status: string; current_version: number; error?: string | null };
        if (j.current_version !== lastSeen) {
          lastSeen = j.current_version;
          if (j.current_version > 0) o.log(`      round ${j.current_version} aggregated → adapter v${j.current_version} published`);
        }
        return j.status === 'running' ? null : j;
      }, watched);
      const lastVersion = final.current_version;
      if (final.status !== 'completed') throw fail('FEDLORA_ERR_JOB_STATE', `demo job ${jobId} ended ${final.status}: ${final.error ?? ''} (logs in ${logs})`);
      // The sites that took part evaluate the final version right after the job completes: wait for those numbers.
      const { rounds: ran } = (await (await fetch(`${httpUrl}/api/jobs/${jobId}/rounds`, auth)).json()) as { rounds: { selected: string[] }[] };
      const tookPart = new Set(ran.flatMap((r) => r.selected)).size;
      roundMs = (Date.now() - jobStarted) / Math.max(1, lastVersion - from);
      await waitFor('final evaluations', Math.max(120_000, 2 * roundMs), async () => {
        // every site reports heldout_items with each evaluation (its loss may be withheld when the set is small)
        // (and, with personalised adapters, the personalised one of that version, evaluated after it)
        for (const kind of o.personalSteps > 0 ? ['global', 'personal'] : ['global']) {
          const m = (await (await fetch(`${httpUrl}/api/jobs/${jobId}/metrics?kind=${kind}&metric=heldout_items`, auth)).json()) as { metrics: { round: number }[] };
          if (m.metrics.filter((x) => x.round === lastVersion).length < tookPart) return null;
        }
        return true;
      }).catch(() => o.log('      (some sites did not report the final evaluation in time; report.json shows what arrived)'));
      return lastVersion;
    }

    // Cross-site evaluation: each hospital's local-only adapter evaluated at every other hospital.
    let crossEval: unknown = null;
    if (o.crossEval && o.sites > 1) {
      const r = await fetch(`${httpUrl}/api/jobs/${jobId}/cross-eval`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: '{}' });
      if (!r.ok) throw fail('FEDLORA_ERR_INTERNAL', `demo: cross-eval request refused: ${r.status} ${await r.text()}`);
      o.log(`      cross-site evaluation requested: each local-only adapter evaluated at every hospital`);
      // every evaluation reports heldout_items (a site's loss may be withheld when its set is small)
      // each hospital evaluates every hospital's local-only adapter: about `sites` evaluations each
      await waitFor('cross-site evaluation', Math.max(120_000, 2 * o.sites * roundMs), async () => {
        const m = (await (await fetch(`${httpUrl}/api/jobs/${jobId}/cross-eval?metric=heldout_items`, auth)).json()) as { available: boolean; cells: unknown[] };
        return m.available && m.cells.length >= o.sites * o.sites ? true : null;
      }, watched).catch(() => o.log('      (cross-site evaluation incomplete in time; report.json has what arrived)'));
      crossEval = (await (await fetch(`${httpUrl}/api/jobs/${jobId}/cross-eval?metric=accuracy`, auth)).json()) as unknown;
    }

    // 6. The report: per round, participants, examples, published version + sha256, held-out metrics.
    const siteInfo = synth.map((s, i) => ({ site: siteNames[i], topDepartment: topDepartment(s.records.map((r) => r.department)), records: s.records.length, small: small !== null && o.sites > 1 && i === o.sites - 1 }));
    const report = await buildReport({ url: httpUrl, token }, jobId, siteNames, siteInfo, { chance: 1 / CHOICES });
    if (crossEval) report.crossEval = crossEval;
    const reportFile = join(out, 'report.json');
    writeFileSync(reportFile, JSON.stringify(report, null, 2));
    o.log(`[6/7] report → ${reportFile}`);
    printReport(report, o.log);
    o.log(`dashboard: ${httpUrl}/   (admin token in ${join(coordDir, 'admin.token')})`);

    // 7. Hospital-1's assistant for its clinicians: guidelines, a user, the server, one answer.
    const siteDirs = siteNames.map((n) => join(out, 'sites', n));
    const canaries = synth.flatMap((s) => s.canaries ?? []);
    if (!o.assistant) return { jobId, httpUrl, adminToken: token, reportFile, report, assistant: null, siteDirs, canaries, stop: stopAll };
    const site1 = siteDirs[0];
    const assistant = await showDemoAssistant({
      siteDir: site1, modelDir: join(out, 'model'), port: assistantPort, log: o.log,
      cli: (args) => cli(args, join(logs, `${siteNames[0]}.log`)),
      start: (args) => start(args, join(logs, `${siteNames[0]}-assistant.log`)),
      waitFor: (what, ms, fn) => waitFor(what, ms, fn, watched),
    });
    return { jobId, httpUrl, adminToken: token, reportFile, report, assistant, siteDirs, canaries, stop: stopAll };
  } catch (e) {
    await stopAll();
    throw e;
  }
}

function topDepartment(deps: (string | undefined)[]): string {
  const c = new Map<string, number>();
  for (const d of deps) if (d) c.set(d, (c.get(d) ?? 0) + 1);
  return [...c].sort((a, b) => b[1] - a[1])[0]?.[0] ?? '?';
}
