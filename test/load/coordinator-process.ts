// The coordinator under load runs in its own process (`node cli/bin.mjs coordinator start`),
// so its peak memory (VmHWM) is its own and not the load driver's. This file prepares the data
// dir (ports 0 on 127.0.0.1), issues join tokens on its SQLite file before start, spawns it,
// reads the bound endpoints from its stdout, and samples /proc/<pid>/status.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { openCoordinatorDb } from '../../coordinator/store/migrations.ts';
import { initCoordinator } from '../../coordinator/service.ts';
import { issueJoinToken, sqlitePathOf } from '../../coordinator/enrollment.ts';

const REPO = new URL('../../', import.meta.url).pathname;

export interface CoordinatorProcess {
  pid: number;
  federationEndpoint: string;
  enrollmentEndpoint: string;
  httpUrl: string;
  adminToken: string;
  dataDir: string;
  /** Peak resident set (VmHWM) and current RSS in MiB, read from /proc. */
  memory(): { hwmMiB: number; rssMiB: number };
  /** user + system CPU seconds the coordinator process has used (/proc/<pid>/stat). */
  cpuSeconds(): number;
  stderrTail(): string;
  stop(): Promise<number | null>;
}

/** Init the data dir and issue one join token per site id (tokens are written to SQLite before start). */
export async function prepareCoordinator(dataDir: string, siteIds: string[]): Promise<{ adminToken: string; tokens: Map<string, string> }> {
  const local = { host: '127.0.0.1', port: 0 };
  const init = await initCoordinator({
    dataDir,
    config: {
      federation: local, enrollment: local, http: local,
      rounds: { tick_ms: 100 },
      heartbeat: { interval_ms: 5_000, timeout_ms: 300_000 },
      log_level: 'warn',
    },
  });
  const db = openCoordinatorDb(sqlitePathOf(dataDir));
  const tokens = new Map<string, string>();
  try {
    // The real enrollment endpoint is known only after start (port 0): sites pass it explicitly.
    for (const id of siteIds) tokens.set(id, issueJoinToken(db, { siteId: id, ttlMs: 3_600_000, enrollEndpoint: '127.0.0.1:1', caSha256: init.caSha256 }).token);
  } finally {
    db.close();
  }
  return { adminToken: init.adminToken, tokens };
}

function readStatusKb(pid: number, key: string): number {
  const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm'));
  return m ? Number(m[1]) : NaN;
}

export function spawnCoordinator(dataDir: string, adminToken: string, startTimeoutMs = 60_000): Promise<CoordinatorProcess> {
  const child: ChildProcess = spawn(process.execPath, [join(REPO, 'cli/bin.mjs'), 'coordinator', 'start', '--data-dir', dataDir], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr!.on('data', (b: Buffer) => (err = (err + b.toString()).slice(-8000)));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`coordinator did not print its endpoints within ${startTimeoutMs} ms; stderr: ${err}`));
    }, startTimeoutMs);
    const early = (code: number | null) => {
      clearTimeout(timer);
      reject(new Error(`coordinator exited with ${code} before start; stderr: ${err}`));
    };
    child.once('exit', early);
    child.stdout!.on('data', (b: Buffer) => {
      out += b.toString();
      const fed = out.match(/federation \(mTLS\): (\S+)/), enr = out.match(/enrollment \(TLS\): (\S+)/), http = out.match(/http: (http\S+)/);
      if (!fed || !enr || !http) return;
      clearTimeout(timer);
      child.off('exit', early);
      const pid = child.pid!;
      resolve({
        pid, federationEndpoint: fed[1], enrollmentEndpoint: enr[1], httpUrl: http[1], adminToken, dataDir,
        memory: () => ({ hwmMiB: readStatusKb(pid, 'VmHWM') / 1024, rssMiB: readStatusKb(pid, 'VmRSS') / 1024 }),
        cpuSeconds: () => {
          const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
          return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100 on Linux)
        },
        stderrTail: () => err,
        async stop() {
          if (child.exitCode !== null) return child.exitCode;
          child.kill('SIGTERM');
          const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
          const code = await exited;
          clearTimeout(t);
          return code;
        },
      });
    });
  });
}
