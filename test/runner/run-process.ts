// Child processes for tests, run asynchronously. A synchronous spawn (spawnSync, execFileSync)
// blocks the vitest fork's event loop for as long as the child runs; vitest's fork<->main calls
// have a fixed 60 s timeout checked by a timer in that fork, so a PyTorch reference or a CLI run
// that takes a minute on a loaded machine fails the whole run with `Timeout calling
// "onTaskUpdate"` although every test passed. Here the loop keeps running while the child does.
import { spawn } from 'node:child_process';
import { TEST_TIMEOUT_MS } from './limits.ts';
import { processTree } from './stall-watchdog.ts';

export interface RunOptions {
  /** Written to the child's stdin, which is then closed (no input: stdin is closed at once). */
  input?: string;
  /** The child's whole environment (as with spawnSync: spread process.env to extend it). */
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Kill the child and everything it started after this long; default half a test's limit. */
  timeoutMs?: number;
}

export interface RunResult {
  /** Exit code; null when killed by a signal, timed out or never started. */
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  /** What it printed on stderr, then a line saying why, when it timed out or could not start. */
  stderr: string;
  timedOut: boolean;
  /** Set when the process could not be started (ENOENT, EACCES). */
  error?: Error;
}

const shown = (cmd: string, args: string[]) => [cmd, ...args].map((a) => (a.length > 80 ? `${a.slice(0, 77)}...` : a)).join(' ');

/** Run `cmd args` to its end. Never rejects: a non-zero status, a timeout or a failed start is in the result. */
export function runProcess(cmd: string, args: string[], o: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = o.timeoutMs ?? TEST_TIMEOUT_MS / 2;
  return new Promise((done) => {
    const child = spawn(cmd, args, { cwd: o.cwd, env: o.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    let error: Error | undefined;
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    // a child that exits without reading all its input: EPIPE here, and its status says the rest
    child.stdin.on('error', () => {});
    child.stdin.end(o.input ?? '');
    const timer = setTimeout(() => {
      timedOut = true;
      // the child first, so it cannot react to its children dying; the list was taken before
      for (const pid of child.pid === undefined ? [] : processTree(child.pid)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }, timeoutMs);
    child.on('error', (e) => (error = e)); // 'close' follows
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      if (timedOut) stderr += `\n${shown(cmd, args)}: killed with everything it started after ${timeoutMs} ms (timeout)`;
      else if (error) stderr += `\n${shown(cmd, args)}: could not run: ${error.message}`;
      done({ status: timedOut || error ? null : status, signal, stdout, stderr, timedOut, error });
    });
  });
}

/** Run `cmd args` and return its stdout; rejects, with its stderr, unless it exits 0 (as execFileSync throws). */
export async function runProcessOk(cmd: string, args: string[], o: RunOptions = {}): Promise<string> {
  const r = await runProcess(cmd, args, o);
  if (r.status !== 0) throw new Error(`${shown(cmd, args)} failed (${r.signal ? `signal ${r.signal}` : `exit ${r.status}`}):\n${r.stderr.trim()}`);
  return r.stdout;
}
