// The real `fedlora` entry point (cli/bin.mjs: tsx, commander) run as a child process, for the
// tests that drive a command end to end. Asynchronous (run-process.ts), so the test worker's
// event loop keeps running while the command does (a synchronous spawn on a loaded machine
// blocks it long enough to time out the runner's calls).
import { join } from 'node:path';
import { runProcess, type RunOptions } from './run-process.ts';

export const FEDLORA_BIN = join(import.meta.dirname, '..', '..', 'cli', 'bin.mjs');

/** Run `fedlora ARGS` (in `cwd`, default this process's) -> its exit code and everything it printed. */
export async function runFedlora(args: string[], o: RunOptions = {}): Promise<{ code: number | null; out: string; err: string }> {
  const r = await runProcess(process.execPath, [FEDLORA_BIN, ...args], o);
  return { code: r.status, out: r.stdout, err: r.stderr };
}
