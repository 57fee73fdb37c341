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
import { writeTinyModel, computeModelManifest } from '../../site-agent/engine/checkpoint/index.ts';
import { generateSites } from '../../site-agent/data/synth/generate.ts';
import { buildReport, printReport } from './report.ts';
import { freePort } from '../../shared/free-port.ts';

const BIN = join(dirname(fileURLToPath(import.meta.url)), '..', 'bin.mjs');

export interface DemoOptions {
  sites: number;
  rounds: number;
  out: string;
  records: number;
  localSteps: number;
  arch: 'llama' | 'qwen2';
  lang: 'en' | 'zh' | 'mixed';
  skew: number;
  seed: number;
  aggregation: string;
  freezeA: boolean;
  dp: { clipNorm: number; noiseMultiplier: number; budget: number } | null;
  secureAggregation: boolean;
  keepRunning: boolean;
  /** After the job, ask for cross-site evaluation (the demo hospitals consent in their policy). */
  crossEval: boolean;
  log: (line: string) => void;
}

export const DEMO_DEFAULTS: Omit<DemoOptions, 'out' | 'log'> = {
  sites: 3,
  rounds: 3,
  records: 120,
  localSteps: 12,
  arch: 'llama',
  lang: 'en',
  skew: 0.8,
  seed: 7,
  aggregation: 'fedavg',
  freezeA: false,
  dp: null,
  secureAggregation: false,
  keepRunning: false,
  crossEval: true,
};

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
  reportFile: string;
  report: Awaited<ReturnType<typeof buildReport>>;
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
  const start = (args: string[], log: string) => {
    const p = daemon(args, log);
    children.push(p);
    watched.push({ p, log });
  };
  const stopAll = async () => {
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
    o.log(`[1/6] tiny ${o.arch} model → ${join(out, 'model')}`);
    writeTinyModel({ arch: o.arch, out: join(out, 'model'), seed: o.seed, layers: 2, hidden: 64, heads: 4, kvHeads: 2, intermediate: 128, tokenizer: 'byte' });
    const manifestSha = computeModelManifest(join(out, 'model')).sha256;

    // 2. Synthetic hospitals: non-IID department mixes, planted identifiers for the de-identifier.
    o.log(`[2/6] synthetic records for ${o.sites} hospitals (skew ${o.skew}, ${o.records} records each)`);
    const synth = generateSites({ sites: o.sites, records: o.records, lang: o.lang, skew: o.skew, seed: o.seed, format: 'jsonl', out: join(out, 'data') });

    // 3. The coordinator: CA, server certificate, config, then the service as its own process.
    const [fedPort, enrollPort, httpPort] = [await freePort(), await freePort(), await freePort()];
    const coordDir = join(out, 'coordinator');
    o.log(`[3/6] coordinator: CA + service (federation :${fedPort}, enrollment :${enrollPort}, http :${httpPort})`);
    await cli(['coordinator', 'init', '--data-dir', coordDir, '--federation-port', String(fedPort), '--enrollment-port', String(enrollPort), '--http-port', String(httpPort), '--public-endpoint', `127.0.0.1:${fedPort}`], join(logs, 'setup.log'));
    start(['coordinator', 'start', '--data-dir', coordDir], join(logs, 'coordinator.log'));
    const httpUrl = `http://127.0.0.1:${httpPort}`;
    await waitFor('the coordinator HTTP API', 60_000, async () => ((await fetch(`${httpUrl}/api/health`)).ok ? true : null), watched);

    // 4. Each hospital: invite (coordinator side), then enroll, ingest and start (site side).
    const siteNames: string[] = [];
    for (let k = 1; k <= o.sites; k++) {
      const name = `hospital-${k}`;
      siteNames.push(name);
      const siteDir = join(out, 'sites', name);
      const top = topDepartment(synth[k - 1].records.map((r) => r.department));
      o.log(`[4/6] ${name} (mostly ${top}): invite, enroll (key stays in ${siteDir}), ingest + de-identify, start`);
      const token = (await cli(['site', 'invite', '--site', name, '--ttl', '1h', '--data-dir', coordDir, '--enroll-endpoint', `127.0.0.1:${enrollPort}`], join(logs, 'setup.log'))).trim();
      await cli(['site', 'init', '--model', join(out, 'model'), '--site-dir', siteDir, '--min-sites', String(Math.min(2, o.sites))], join(logs, `${name}.log`));
      const cfgFile = join(siteDir, 'site.yaml');
      const cfg = YAML.parse(readFileSync(cfgFile, 'utf8'));
      // The byte-level tokenizer of the tiny model makes one token per byte: keep prompts short by
      // leaving the (identifier-heavy) history out of training, as a site policy may.
      cfg.policy.allow_cross_eval = o.crossEval;
      cfg.policy.allowed_fields = ['department', 'chiefComplaint', 'exam', 'labs', 'diagnosis', 'treatment'];
      cfg.training = { local_baseline: true, max_seq_len: 768, max_train_examples: null };
      cfg.evaluation = { min_items: 5, max_items: 24, evaluate_base: false, generate_items: 6 };
      cfg.network = { heartbeat_interval_ms: 2000, reconnect_initial_ms: 300, reconnect_max_ms: 5000, chunk_size: 1024 * 1024 };
      writeFileSync(cfgFile, YAML.stringify(cfg));
      await cli(['site', 'enroll', '--token', token, '--site-dir', siteDir], join(logs, `${name}.log`));
      await cli(['site', 'ingest', '--format', 'jsonl', '--site-dir', siteDir, synth[k - 1].file!], join(logs, `${name}.log`));
      start(['site', 'start', '--site-dir', siteDir], join(logs, `${name}.log`));
    }
    const token = readFileSync(join(coordDir, 'admin.token'), 'utf8').trim();
    await waitFor('all sites online', 60_000, async () => {
      const r = (await (await fetch(`${httpUrl}/api/sites`, { headers: { authorization: `Bearer ${token}` } })).json()) as { sites: { id: string; online?: boolean }[] };
      return r.sites.filter((s) => s.online).length >= o.sites ? true : null;
    }, watched);

    // 5. The job: FedAvg (or the chosen strategy) over all sites, a few local steps per round.
    const job: Record<string, unknown> = {
      name: `demo: ${o.sites} hospitals, ${o.rounds} rounds`,
      base_model: { id: `fedlora/tiny-${o.arch}`, manifest_sha256: manifestSha, config_path: join(out, 'model', 'config.json') },
      lora: { r: 8, alpha: 16, target_modules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], dropout: 0, freeze_a: o.freezeA, init_seed: o.seed },
      rounds: o.rounds,
      train: { local_steps: o.localSteps, learning_rate: 5e-3, optimizer: 'adamw', batch_tokens: 2048, seed: o.seed, warmup_steps: 2, max_grad_norm: 1 },
      min_sites: o.sites,
      max_sites: o.sites,
      round_deadline_s: 900,
      aggregation: { name: o.aggregation, ...AGGREGATION_DEFAULTS[o.aggregation] },
      privacy: {
        secure_aggregation: o.secureAggregation,
        ...(o.dp ? { dp: { clip_norm: o.dp.clipNorm, noise_multiplier: o.dp.noiseMultiplier, delta: 1e-5, epsilon_budget: o.dp.budget } } : {}),
      },
    };
    const jobFile = join(out, 'job.yaml');
    writeFileSync(jobFile, YAML.stringify(job));
    const submitted = await cli(['job', 'submit', jobFile, '--data-dir', coordDir], join(logs, 'setup.log'));
    const jobId = /job (\S+)/.exec(submitted)?.[1];
    if (!jobId) throw fail('FEDLORA_ERR_INTERNAL', `demo: could not read the job id from "${submitted.trim()}"`);
    o.log(`[5/6] job ${jobId} submitted: ${o.rounds} rounds × ${o.localSteps} local steps at each of ${o.sites} sites`);

    let lastSeen = -1;
    const final = await waitFor('the job to finish', 60 * 60_000, async () => {
      const j = (await (await fetch(`${httpUrl}/api/jobs/${jobId}`)).json()) as { status: string; current_version: number; error?: string | null };
      if (j.current_version !== lastSeen) {
        lastSeen = j.current_version;
        if (j.current_version > 0) o.log(`      round ${j.current_version} aggregated → adapter v${j.current_version} published`);
      }
      return j.status === 'running' ? null : j;
    }, watched);
    const lastVersion = final.current_version;
    if (final.status !== 'completed') throw fail('FEDLORA_ERR_JOB_STATE', `demo job ${jobId} ended ${final.status}: ${final.error ?? ''} (logs in ${logs})`);
    // The sites evaluate the final version right after the job completes: wait for those numbers.
    await waitFor('final evaluations', 120_000, async () => {
      // every site reports heldout_items with each evaluation (its loss may be withheld when the set is small)
      const m = (await (await fetch(`${httpUrl}/api/jobs/${jobId}/metrics?kind=global&metric=heldout_items`)).json()) as { metrics: { round: number }[] };
      return m.metrics.filter((x) => x.round === lastVersion).length >= o.sites ? true : null;
    }).catch(() => o.log('      (some sites did not report the final evaluation in time; report.json shows what arrived)'));

    // Cross-site evaluation: each hospital's local-only adapter evaluated at every other hospital.
    let crossEval: unknown = null;
    if (o.crossEval && o.sites > 1) {
      const r = await fetch(`${httpUrl}/api/jobs/${jobId}/cross-eval`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: '{}' });
      if (!r.ok) throw fail('FEDLORA_ERR_INTERNAL', `demo: cross-eval request refused: ${r.status} ${await r.text()}`);
      o.log(`      cross-site evaluation requested: each local-only adapter evaluated at every hospital`);
      // every evaluation reports heldout_items (a site's loss may be withheld when its set is small)
      await waitFor('cross-site evaluation', 120_000, async () => {
        const m = (await (await fetch(`${httpUrl}/api/jobs/${jobId}/cross-eval?metric=heldout_items`)).json()) as { available: boolean; cells: unknown[] };
        return m.available && m.cells.length >= o.sites * o.sites ? true : null;
      }, watched).catch(() => o.log('      (cross-site evaluation incomplete in time; report.json has what arrived)'));
      crossEval = (await (await fetch(`${httpUrl}/api/jobs/${jobId}/cross-eval?metric=loss`)).json()) as unknown;
    }

    // 6. The report: per round, participants, examples, published version + sha256, held-out metrics.
    const report = await buildReport(httpUrl, jobId, siteNames, synth.map((s, i) => ({ site: siteNames[i], topDepartment: topDepartment(s.records.map((r) => r.department)) })));
    if (crossEval) report.crossEval = crossEval;
    const reportFile = join(out, 'report.json');
    writeFileSync(reportFile, JSON.stringify(report, null, 2));
    o.log(`[6/6] report → ${reportFile}`);
    printReport(report, o.log);
    o.log(`dashboard: ${httpUrl}/   (admin token in ${join(coordDir, 'admin.token')})`);
    return { jobId, httpUrl, reportFile, report, stop: stopAll };
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
