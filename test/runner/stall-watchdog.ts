// A vitest reporter that turns a stuck test file into a failure that names it, instead of a CI
// run that never ends. vitest has no per-file timeout, and its test/hook timeouts run on the
// fork's own event loop, so a fork whose loop is blocked (a native deadlock, a synchronous call
// that never returns) or a pool that stops handing out files would hang the run for ever. This
// watchdog runs in the main vitest process and reads the forks' heartbeats (fork-heartbeat.ts):
//  - a fork whose heartbeat is older than `stallMs` (no test may hold the loop longer than a test
//    may run) is stuck, and so is a fork that has run one file for longer than `fileLimitMs`;
//  - when files remain but no fork has beaten and no test event came for `stallMs`, the pool
//    itself is stuck.
// Either way it names the stuck file(s) and the files that never finished, kills every process
// below vitest (forks and the servers their tests started) and ends the run with status 1.
// (Killing only the stuck fork is not enough: vitest's pool then dies on the closed channel.)
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Reporter, TestModule, TestSpecification } from 'vitest/node';

export interface WatchdogOptions {
  /** Folder of the forks' heartbeat files (FEDLORA_FORK_BEATS). */
  dir: string;
  stallMs: number;
  fileLimitMs: number;
  /** How often to look (ms). */
  pollMs: number;
  root: string;
}

interface Beat { pid: number; files: string[]; startedAt: number }

/** The pid and every process below it (Linux /proc); just the pid elsewhere. */
export function processTree(pid: number): number[] {
  let all: Array<{ pid: number; ppid: number }> = [];
  try {
    all = readdirSync('/proc').filter((d) => /^\d+$/.test(d)).flatMap((d) => {
      try {
        // field 4 of /proc/PID/stat is the parent pid; the command name (field 2) may hold spaces
        const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
        return [{ pid: Number(d), ppid: Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) }];
      } catch {
        return [];
      }
    });
  } catch {
    return [pid];
  }
  const out = [pid];
  for (let i = 0; i < out.length; i++) for (const p of all) if (p.ppid === out[i]) out.push(p.pid);
  return out;
}

/** SIGKILL the pid's descendants, deepest first, then the pid itself unless `keepRoot`. */
export function killTree(pid: number, keepRoot = false): void {
  for (const p of processTree(pid).slice(keepRoot ? 1 : 0).reverse()) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

export class StallWatchdog implements Reporter {
  private timer?: NodeJS.Timeout;
  private unfinished = new Set<string>();
  private lastEvent = Date.now();

  constructor(private readonly o: WatchdogOptions) {}

  onInit(): void {
    mkdirSync(this.o.dir, { recursive: true });
    this.timer = setInterval(() => this.check(), this.o.pollMs);
    this.timer.unref();
  }

  onTestRunStart(specs: ReadonlyArray<TestSpecification>): void {
    for (const s of specs) this.unfinished.add(s.moduleId);
    this.touch();
  }

  onTestModuleEnd(m: TestModule): void {
    this.unfinished.delete(m.moduleId);
    this.touch();
  }

  onTestModuleQueued = () => this.touch();
  onTestModuleStart = () => this.touch();
  onTestCaseReady = () => this.touch();
  onTestCaseResult = () => this.touch();
  onHookStart = () => this.touch();
  onHookEnd = () => this.touch();

  onTestRunEnd(): void {
    clearInterval(this.timer);
    rmSync(this.o.dir, { recursive: true, force: true });
  }

  private touch(): void {
    this.lastEvent = Date.now();
  }

  private name(file: string): string {
    return file.startsWith(`${this.o.root}/`) ? file.slice(this.o.root.length + 1) : file;
  }

  private say(line: string): void {
    process.stderr.write(`\n[stall-watchdog] ${line}\n`);
  }

  private check(): void {
    const now = Date.now();
    const stuck: string[] = [];
    let beating = 0;
    let entries: string[] = [];
    try {
      entries = readdirSync(this.o.dir).filter((f) => f.endsWith('.json'));
    } catch {
      // no folder: no fork has beaten (the pool rule below still applies)
    }
    for (const entry of entries) {
      const path = join(this.o.dir, entry);
      let beat: Beat;
      let age: number;
      try {
        beat = JSON.parse(readFileSync(path, 'utf8')) as Beat;
        age = now - statSync(path).mtimeMs;
      } catch {
        continue; // being rewritten, or removed by an exiting fork
      }
      if (!alive(beat.pid)) {
        rmSync(path, { force: true });
        continue;
      }
      const files = beat.files.map((f) => this.name(f)).join(', ') || '(a fork whose file is not known yet)';
      const s = (ms: number) => `${Math.round(ms / 1000)} s`;
      if (age > this.o.stallMs) stuck.push(`${files}: its fork's event loop has been blocked for ${s(age)} (limit ${s(this.o.stallMs)}: a deadlock or a call that never returns)`);
      else if (now - beat.startedAt > this.o.fileLimitMs) stuck.push(`${files}: it has run for ${s(now - beat.startedAt)} (limit ${s(this.o.fileLimitMs)} per file)`);
      else beating++;
    }
    if (beating > 0) this.touch();
    if (stuck.length === 0 && !(beating === 0 && this.unfinished.size > 0 && now - this.lastEvent > this.o.stallMs)) return;
    if (stuck.length === 0) stuck.push(`the pool: no fork has run and no test has reported for ${Math.round((now - this.lastEvent) / 1000)} s`);
    const left = [...this.unfinished].map((f) => this.name(f)).sort();
    this.say(`STUCK — ${stuck.join('; ')}.\n[stall-watchdog] ${left.length} file(s) did not finish: ${left.join(', ')}.\n[stall-watchdog] Killing the forks and the processes they started; the run fails.`);
    clearInterval(this.timer);
    killTree(process.pid, true);
    rmSync(this.o.dir, { recursive: true, force: true });
    process.exit(1);
  }
}
