// The real `fedlora` entry point (cli/bin.mjs: tsx, commander) run as a child process, for the
// tests that drive a command end to end. Asynchronous, so the test worker's event loop keeps
// running while the command does (a synchronous spawn on a loaded machine blocks it long enough
// to time out the runner's calls); the deadline is the test's (vitest.config.ts, scaled to the machine).
import { spawn } from 'node:child_process';
import { join } from 'node:path';

export const FEDLORA_BIN = join(import.meta.dirname, '..', '..', 'cli', 'bin.mjs');

/** Run `fedlora ARGS` in `cwd` (default: this process's) -> its exit code and everything it printed. */
export function runFedlora(args: string[], o: { cwd?: string } = {}): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((done, fail) => {
    const p = spawn(process.execPath, [FEDLORA_BIN, ...args], { cwd: o.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    p.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    p.on('error', fail);
    p.on('close', (code) => done({ code, out, err }));
  });
}
