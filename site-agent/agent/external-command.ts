// Running a site's own program (its external trainer or evaluator) on a job folder the agent
// wrote: argv as configured, cwd = the folder, the job file's path in an environment variable.
// Its stdout goes to the agent's stdout, its stderr to the agent's stderr, and the last lines of
// stderr into the error when it fails, so "exited with 2" comes with the program's own reason
// (e.g. the Python package it is missing). It is stopped (SIGTERM, then SIGKILL) at its timeout
// or when the agent stops.

import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import type { z } from 'zod';
import { fail, type ErrorCode } from '../../shared/errors.ts';
import { describeZodError } from '../../shared/zod-errors.ts';

export interface JobCommand {
  argv: string[];
  cwd: string;
  env: Record<string, string>;
  timeoutS: number;
  /** What it is, for messages: "external trainer", "external evaluator". */
  what: string;
  /** The config field that sets the timeout, named when it is reached. */
  timeoutField: string;
  code: ErrorCode;
  signal?: AbortSignal;
}

const STDERR_TAIL_BYTES = 2000;
const KILL_GRACE_MS = 10_000;

export function runJobCommand(c: JobCommand): Promise<void> {
  const shown = `${c.what} "${c.argv.join(' ')}"`;
  return new Promise<void>((resolve, reject) => {
    const child = spawn(c.argv[0], c.argv.slice(1), { cwd: c.cwd, env: { ...process.env, ...c.env }, stdio: ['ignore', 'inherit', 'pipe'] });
    let tail = '';
    child.stderr!.on('data', (d: Buffer) => {
      process.stderr.write(d);
      tail = (tail + d.toString('utf8')).slice(-STDERR_TAIL_BYTES);
    });
    let timedOut = false;
    const stop = () => {
      child.kill('SIGTERM');
      setTimeout(() => child.kill('SIGKILL'), KILL_GRACE_MS).unref();
    };
    const timer = setTimeout(() => {
      timedOut = true;
      stop();
    }, c.timeoutS * 1000);
    c.signal?.addEventListener('abort', stop);
    let settled = false;
    const done = () => {
      const first = !settled;
      settled = true;
      clearTimeout(timer);
      c.signal?.removeEventListener('abort', stop);
      return first;
    };
    child.on('error', (e) => {
      if (done()) reject(fail(c.code, `${shown} could not start: ${e.message}`));
    });
    child.on('close', (code, sig) => {
      if (!done()) return;
      if (code === 0) return resolve();
      const why = tail.trim().split('\n').slice(-5).join(' | ');
      if (timedOut) return reject(fail(c.code, `${shown} timed out after ${c.timeoutS} s (${c.timeoutField})`));
      if (c.signal?.aborted) return reject(fail(c.code, `${shown} was stopped: the agent is stopping`));
      reject(fail(c.code, `${shown} exited with ${sig ?? code}${why ? `: ${why}` : ''}`));
    });
  });
}

/** A JSON file the program had to write, checked against its schema; errors name the file and field. */
export function readOutputJson<S extends z.ZodTypeAny>(file: string, schema: S, what: string, code: ErrorCode): z.output<S> {
  if (!existsSync(file)) throw fail(code, `${what} wrote no ${file}`);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw fail(code, `${file}: not valid JSON (${(e as Error).message})`);
  }
  const r = schema.safeParse(raw);
  if (!r.success) throw fail(code, describeZodError(file, r.error));
  return r.data;
}
