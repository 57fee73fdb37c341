// Runs in every vitest fork before its test file (setupFiles): every BEAT_MS, while the fork's
// event loop runs, it rewrites <FEDLORA_FORK_BEATS>/<pid>.json naming the file the fork runs.
// The stall watchdog (stall-watchdog.ts, in the main vitest process) reads these: a fork whose
// beat has gone stale has a blocked event loop (a native deadlock, a synchronous call that never
// returns), which vitest's own test and hook timeouts cannot see because they need that loop.
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const BEAT_MS = 1000;

interface WorkerState { ctx?: { files?: Array<string | { filepath: string }> } }
interface Beat { pid: number; files: string[]; startedAt: number }
const g = globalThis as { __vitest_worker__?: WorkerState; __fedloraBeat__?: Beat };
const dir = process.env.FEDLORA_FORK_BEATS;
if (dir) {
  const files = (g.__vitest_worker__?.ctx?.files ?? []).map((f) => (typeof f === 'string' ? f : f.filepath));
  const file = join(dir, `${process.pid}.json`);
  const beat = () => {
    try {
      writeFileSync(file, JSON.stringify(g.__fedloraBeat__)); // the watchdog reads its mtime
    } catch {
      // the run is over and the folder is gone
    }
  };
  const first = !g.__fedloraBeat__;
  g.__fedloraBeat__ = { pid: process.pid, files, startedAt: Date.now() }; // a reused fork (no isolation): the new file
  beat();
  if (first) {
    setInterval(beat, BEAT_MS).unref();
    process.on('exit', () => rmSync(file, { force: true }));
  }
}
