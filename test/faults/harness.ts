// Fault-test harness: a coordinator and N enrolled site agents as separate `fedlora` processes
// (real mutual-TLS gRPC on 127.0.0.1, real SQLite, real ONNX Runtime training of a tiny model),
// set up with the same CLI steps as `fedlora demo` (cli/demo/run-demo.ts), but with short
// heartbeats and deadlines, and handles to kill/restart any process with any signal.
//
// Time: every wait, round deadline and heartbeat timeout is derived from measured work, so that
// the tests hold on a loaded 2-core machine. One unit of work is a `fedlora` command (a node
// process start plus its work: the same kind of work as a site's round or a coordinator
// restart), timed at every command of the setup and every later command and coordinator start
// (Federation.clock).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, openSync, readFileSync, writeFileSync, existsSync, rmSync } from 'node:fs';
import { freePort } from '../../shared/free-port.ts';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import Database from 'better-sqlite3-multiple-ciphers';
import { initTinyModel, computeModelManifest } from '../../site-agent/engine/index.ts';
import { generateSites } from '../../site-agent/data/synth/generate.ts';
import { WorkClock } from '../runner/work-clock.ts';

const BIN = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'cli', 'bin.mjs');

export { freePort };

/** Run one CLI command to completion; resolves stdout, rejects with the tail of stderr. */
export function cli(args: string[]): Promise<string> {
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('exit', (code) => (code === 0 ? res(out) : rej(new Error(`fedlora ${args.join(' ')} exited ${code}: ${err.trim().split('\n').slice(-4).join(' | ')}`))));
  });
}

// Every daemon this test process started, so that none outlives it: a setup that times out
// never returns its Federation (nothing to stopAll), and vitest ends a fork with SIGTERM.
const live = new Set<ChildProcess>();
const killLive = () => {
  for (const p of live) p.kill('SIGKILL');
};
process.on('exit', killLive);
process.once('SIGTERM', () => {
  killLive();
  process.exit(143);
});

/** A wait may take this many times its measured work before it counts as stuck. */
const WAIT_FACTOR = 10;
/** A round deadline leaves this many times the measured work of what must fit in the round. */
const DEADLINE_FACTOR = 3;
const HEARTBEAT_INTERVAL_MS = 500;

/** Poll `fn` until it gives a value, for at most `timeoutMs` (a budget: see Federation.waitFor). */
export async function waitFor<T>(what: string, timeoutMs: number, fn: () => Promise<T | null | undefined> | T | null | undefined): Promise<T> {
  const until = Date.now() + timeoutMs;
  let last: unknown = null;
  for (;;) {
    try {
      const v = await fn();
      if (v !== null && v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ''}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export interface Proc {
  p: ChildProcess;
  log: string;
}

export interface RoundInfo {
  round: number;
  attempt: number;
  state: string;
  selected: string[];
  tasks: { site: string; status: string }[];
  updates: { update_id: string; site: string; status: string; sha256: string }[];
}

export interface Federation {
  /** Deadlines derived from measured work; one unit is a `fedlora` command. */
  clock: WorkClock;
  /** Poll `fn` until it gives a value, for at most WAIT_FACTOR x `units` units of work, plus
   *  `plusMs` of configured time the wait includes (a round deadline, a heartbeat timeout). */
  waitFor<T>(what: string, units: number, fn: () => Promise<T | null | undefined> | T | null | undefined, plusMs?: number): Promise<T>;
  /** A round deadline (seconds) with room for `units` units of work (DEADLINE_FACTOR x each). */
  roundDeadlineS(units: number): number;
  /** The coordinator's heartbeat timeout (derived: see FederationOptions.heartbeatTimeoutUnits). */
  heartbeatTimeoutMs: number;
  dir: string;
  coordDir: string;
  httpUrl: string;
  fedPort: number;
  adminToken: string;
  modelDir: string;
  manifestSha: string;
  sites: { name: string; dir: string }[];
  /** `env`: extra environment of this coordinator process (e.g. FEDLORA_FAILPOINTS). */
  startCoordinator(opts?: { env?: Record<string, string> }): Promise<Proc>;
  /** The coordinator process started last. */
  coordinator(): Proc;
  startSite(i: number, endpoint?: string): Proc;
  kill(p: Proc | undefined, signal?: NodeJS.Signals): Promise<void>;
  /** `opts.id`: the job id (`fedlora job submit --id`). */
  submitJob(patch?: Record<string, unknown>, opts?: { id?: string }): Promise<string>;
  api<T = any>(path: string): Promise<T>;
  rounds(jobId: string): Promise<RoundInfo[]>;
  /** A read-only look at the coordinator's SQLite (WAL: safe while it runs). */
  query<T = any>(sql: string, ...params: unknown[]): T[];
  logTail(p: Proc, lines?: number): string;
  stopAll(): Promise<void>;
}

export interface FederationOptions {
  sites: number;
  records?: number;
  seed?: number;
  /** The coordinator's heartbeat timeout in units of work (default 2: a site whose event loop a
   *  training step holds up on a busy machine is not taken for gone). */
  heartbeatTimeoutUnits?: number;
  coordinatorPatch?: (cfg: any) => void;
  /** Edit each site's site.yaml before it enrolls (e.g. an external-command trainer). */
  sitePatch?: (cfg: any, siteName: string, clock: WorkClock) => void;
  /** Tiny model dimensions (default: 1 layer, hidden 32, 2 heads, 1 kv head, intermediate 64). */
  model?: { hidden?: number; layers?: number; intermediate?: number; heads?: number; kvHeads?: number };
  /** Sites' network.chunk_size (default 1 MiB; the site config allows 64 KiB .. 4 MiB). */
  siteChunkSize?: number;
}

export async function setupFederation(o: FederationOptions): Promise<Federation> {
  const dir = mkdtempSync(join(tmpdir(), 'fedlora-faults-'));
  mkdirSync(join(dir, 'logs'));
  const seed = o.seed ?? 11;
  const modelDir = join(dir, 'model');
  const m = { layers: 1, hidden: 32, heads: 2, kvHeads: 1, intermediate: 64, ...o.model };
  initTinyModel({ arch: 'llama', out: modelDir, seed, ...m, tokenizer: 'byte' });
  const manifestSha = computeModelManifest(modelDir).sha256;
  const synth = generateSites({ sites: o.sites, records: o.records ?? 30, lang: 'en', skew: 0.5, seed, format: 'jsonl', out: join(dir, 'data') });

  const [fedPort, enrollPort, httpPort] = [await freePort(), await freePort(), await freePort()];
  const coordDir = join(dir, 'coordinator');
  const initArgs = ['coordinator', 'init', '--data-dir', coordDir, '--federation-port', String(fedPort), '--enrollment-port', String(enrollPort), '--http-port', String(httpPort), '--public-endpoint', `127.0.0.1:${fedPort}`];
  const clock = await WorkClock.measure('`fedlora` command', WAIT_FACTOR, 1, () => cli(initArgs));
  const command = (args: string[]) => clock.time(1, () => cli(args));
  const budgetMs = (units: number, plusMs = 0) => clock.budgetMs(units) + plusMs;
  const roundDeadlineS = (units: number) => Math.ceil((DEADLINE_FACTOR * clock.unitMs * units) / 1000);
  const heartbeatTimeoutMs = Math.max(4 * HEARTBEAT_INTERVAL_MS, Math.round((o.heartbeatTimeoutUnits ?? 2) * clock.unitMs));
  const cfgFile = join(coordDir, 'coordinator.yaml');
  const cfg = YAML.parse(readFileSync(cfgFile, 'utf8'));
  cfg.heartbeat = { interval_ms: HEARTBEAT_INTERVAL_MS, timeout_ms: heartbeatTimeoutMs };
  cfg.rounds = { tick_ms: 200 };
  o.coordinatorPatch?.(cfg);
  writeFileSync(cfgFile, YAML.stringify(cfg));
  const adminToken = readFileSync(join(coordDir, 'admin.token'), 'utf8').trim();
  const httpUrl = `http://127.0.0.1:${httpPort}`;

  const procs: Proc[] = [];
  const daemon = (args: string[], log: string, env: Record<string, string> = {}): Proc => {
    const fd = openSync(log, 'a');
    const p = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', fd, fd], env: { ...process.env, FEDLORA_LOG_LEVEL: 'info', ...env } });
    const proc = { p, log };
    procs.push(proc);
    live.add(p);
    p.once('exit', () => live.delete(p));
    return proc;
  };
  const api = async <T,>(path: string): Promise<T> => {
    const r = await fetch(`${httpUrl}${path}`, { headers: { authorization: `Bearer ${adminToken}` } });
    if (!r.ok) throw new Error(`GET ${path}: ${r.status} ${await r.text()}`);
    return (await r.json()) as T;
  };
  let current: Proc | undefined;
  const startCoordinator = async (opts: { env?: Record<string, string> } = {}) => {
    const c = daemon(['coordinator', 'start', '--data-dir', coordDir], join(dir, 'logs', 'coordinator.log'), opts.env);
    const up = await clock.time(1, () => waitFor('the coordinator HTTP API', budgetMs(2), async () => {
      if (c.p.exitCode !== null) return 'exited'; // no point waiting: say why at once
      return (await fetch(`${httpUrl}/healthz`)).ok ? 'up' : null;
    }));
    if (up === 'exited') {
      const tail = existsSync(c.log) ? readFileSync(c.log, 'utf8').trim().split('\n').slice(-6).join('\n') : '';
      throw new Error(`the coordinator exited ${c.p.exitCode} at start:\n${tail}`);
    }
    current = c;
    return c;
  };
  const kill = (p: Proc | undefined, signal: NodeJS.Signals = 'SIGKILL') =>
    new Promise<void>((r) => {
      if (!p || p.p.exitCode !== null || p.p.signalCode !== null) return r();
      p.p.once('exit', () => r());
      p.p.kill(signal);
      setTimeout(() => p.p.kill('SIGKILL'), budgetMs(1)).unref(); // a stop that takes longer is stuck
    });

  await startCoordinator();
  const sites: { name: string; dir: string }[] = [];
  for (let k = 1; k <= o.sites; k++) {
    const name = `hospital-${k}`;
    const siteDir = join(dir, 'sites', name);
    const token = (await command(['site', 'invite', '--site', name, '--ttl', '1h', '--data-dir', coordDir, '--enroll-endpoint', `127.0.0.1:${enrollPort}`])).trim();
    await command(['site', 'init', '--model', modelDir, '--site-dir', siteDir, '--min-sites', '1']);
    const sf = join(siteDir, 'site.yaml');
    const sc = YAML.parse(readFileSync(sf, 'utf8'));
    sc.policy.allowed_fields = ['department', 'chiefComplaint', 'diagnosis'];
    sc.training = { local_baseline: false, max_seq_len: 256, max_train_examples: 16 };
    sc.evaluation = { min_items: 2, max_items: 4, evaluate_base: false };
    // The release gate's safety suite (its own tests: test/serve/gate.test.ts) is not what these
    // tests are about, and its generations would compete with the rounds for the two cores.
    sc.serve = { ...(sc.serve ?? {}), gate: { ...(sc.serve?.gate ?? {}), safety_on_receive: false } };
    sc.network = { heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS, reconnect_initial_ms: 200, reconnect_max_ms: 1000, chunk_size: o.siteChunkSize ?? 1024 * 1024 };
    o.sitePatch?.(sc, name, clock);
    writeFileSync(sf, YAML.stringify(sc));
    await command(['site', 'enroll', '--token', token, '--site-dir', siteDir]);
    await command(['site', 'ingest', '--format', 'jsonl', '--site-dir', siteDir, synth[k - 1].file!]);
    sites.push({ name, dir: siteDir });
  }

  let db: Database.Database | null = null;
  return {
    clock,
    waitFor: (what, units, fn, plusMs = 0) => waitFor(`${what} (budget ${clock.explain(units)}${plusMs ? ` + ${plusMs} ms configured` : ''})`, budgetMs(units, plusMs), fn),
    roundDeadlineS,
    heartbeatTimeoutMs,
    dir, coordDir, httpUrl, fedPort, adminToken, modelDir, manifestSha, sites,
    startCoordinator,
    coordinator: () => current!,
    startSite: (i, endpoint) => {
      const args = ['site', 'start', '--site-dir', sites[i].dir];
      if (endpoint) args.push('--endpoint', endpoint);
      return daemon(args, join(dir, 'logs', `${sites[i].name}.log`));
    },
    kill,
    async submitJob(patch = {}, opts = {}) {
      const job = {
        name: 'fault test',
        base_model: { id: 'fedlora/tiny-llama', manifest_sha256: manifestSha, config_path: join(modelDir, 'config.json') },
        lora: { r: 2, alpha: 4, target_modules: ['q_proj', 'v_proj'], dropout: 0, init_seed: seed },
        rounds: 2,
        train: { local_steps: 2, learning_rate: 5e-3, optimizer: 'adamw', batch_tokens: 512, seed, warmup_steps: 0, max_grad_norm: 1 },
        min_sites: 1,
        max_sites: o.sites,
        round_deadline_s: roundDeadlineS(20), // a deadline the sites never reach
        round_retries: 2,
        aggregation: { name: 'fedavg' },
        ...patch,
      };
      const f = join(dir, `job-${Date.now()}.yaml`);
      writeFileSync(f, YAML.stringify(job));
      const out = await command(['job', 'submit', f, '--data-dir', coordDir, ...(opts.id ? ['--id', opts.id] : [])]);
      const id = /job (\S+)/.exec(out)?.[1];
      if (!id) throw new Error(`no job id in "${out}"`);
      return id;
    },
    api,
    rounds: async (jobId) => (await api<{ rounds: RoundInfo[] }>(`/api/jobs/${jobId}/rounds`)).rounds,
    query(sql, ...params) {
      db ??= new Database(join(coordDir, 'coordinator.sqlite'), { readonly: true, fileMustExist: true });
      return db.prepare(sql).all(...params) as any[];
    },
    logTail: (p, lines = 15) => (existsSync(p.log) ? readFileSync(p.log, 'utf8').trim().split('\n').slice(-lines).join('\n') : ''),
    async stopAll() {
      db?.close();
      db = null;
      await Promise.all(procs.map((p) => kill(p, 'SIGTERM')));
      if (!process.env.FEDLORA_KEEP_FAULT_DIRS) rmSync(dir, { recursive: true, force: true });
    },
  };
}
