// Failpoints: named places in product code where a test can make the process stop dead
// (pause there so the test can SIGKILL it, or exit abruptly), in the style of etcd's gofail
// and FoundationDB's deterministic crash points. A crash test that sleeps "about long enough"
// and then kills races the code; a failpoint makes "killed after the aggregate was computed
// but before anything was published" an exact, repeatable state.
//
// Inert unless the environment variable FEDLORA_FAILPOINTS is set; it is parsed once, and an
// unset point then costs one Map lookup. Syntax (gofail's, reduced):
//
//   FEDLORA_FAILPOINTS="<name>=<terms>[;<name>=<terms>...]"
//   terms  := term ('->' term)*          evaluated in order
//   term   := [count '*'] action         count: apply to this many hits, then go to the next term
//   action := off | pause(<ms>) | exit | exit(<code>)
//
// e.g. "coordinator.aggregate.computed=pause(30000)" pauses every aggregation there for 30 s;
// "coordinator.publish.written=1*off->pause(30000)" lets the first hit pass and pauses from the
// second on. A term without a count applies forever, so it must be the last. `exit` is
// process.exit(137) (what a SIGKILLed process reports): no finally blocks, no shutdown hooks.
//
// Each hit of a configured point writes exactly one line to stderr,
//   fedlora failpoint <name> reached: <action>
// before the action, so a test can wait for it (stderr writes to files and pipes are
// synchronous in Node on POSIX, so the line is out even when the action is `exit`).
import { fail } from './errors.ts';

/** Every failpoint in the code base (a spec naming another one is refused: typos fail loudly). */
const FAILPOINTS = [
  /** The round's strategy has computed the new global adapter; nothing of it is written yet. */
  'coordinator.aggregate.computed',
  /** The version's files (adapter, config, signed manifest) are on disk; the transaction that
   *  records the version and marks the round published has not run. */
  'coordinator.publish.written',
  /** An upload's group of chunks is written to its .part file, not yet fsynced nor recorded. */
  'coordinator.upload.written',
  /** That group is fsynced; its progress is not recorded (not acknowledged) yet. */
  'coordinator.upload.synced',
] as const;
export type FailpointName = (typeof FAILPOINTS)[number];

export const FAILPOINTS_ENV = 'FEDLORA_FAILPOINTS';

export type FailpointAction = { kind: 'off' } | { kind: 'pause'; ms: number } | { kind: 'exit'; code: number };
export interface FailpointTerm {
  /** Hits this term applies to; Infinity = all remaining. */
  count: number;
  action: FailpointAction;
  text: string;
}

const ACTION = /^(off|exit|pause\((\d+)\)|exit\((\d+)\))$/;

/** Parse a FEDLORA_FAILPOINTS value. Errors are FEDLORA_ERR_CONFIG naming the bad entry. */
export function parseFailpoints(spec: string, source = FAILPOINTS_ENV): Map<FailpointName, FailpointTerm[]> {
  const out = new Map<FailpointName, FailpointTerm[]>();
  const entries = spec.split(';').map((e) => e.trim()).filter((e) => e.length > 0);
  for (const entry of entries) {
    const bad = (why: string) => fail('FEDLORA_ERR_CONFIG', `${source}: entry "${entry}": ${why}`);
    const eq = entry.indexOf('=');
    if (eq <= 0) throw bad('expected <name>=<action>, e.g. coordinator.aggregate.computed=pause(30000)');
    const name = entry.slice(0, eq).trim();
    if (!(FAILPOINTS as readonly string[]).includes(name)) throw bad(`unknown failpoint "${name}" (known: ${FAILPOINTS.join(', ')})`);
    if (out.has(name as FailpointName)) throw bad(`failpoint "${name}" is set twice`);
    const terms: FailpointTerm[] = [];
    const parts = entry.slice(eq + 1).split('->').map((t) => t.trim());
    parts.forEach((text, i) => {
      const m = /^(?:(\d+)\*)?(.*)$/.exec(text)!;
      const count = m[1] === undefined ? Infinity : Number(m[1]);
      if (count === 0) throw bad(`term "${text}": a count must be >= 1`);
      const a = ACTION.exec(m[2].trim());
      if (!a) throw bad(`term "${text}": unknown action (expected off, pause(<ms>), exit or exit(<code>))`);
      if (count === Infinity && i < parts.length - 1) throw bad(`term "${text}" has no count, so the terms after it could never run; give it one (e.g. 1*${text})`);
      const action: FailpointAction = a[1] === 'off' ? { kind: 'off' }
        : a[2] !== undefined ? { kind: 'pause', ms: Number(a[2]) }
        : { kind: 'exit', code: a[3] !== undefined ? Number(a[3]) : 137 };
      if (action.kind === 'exit' && action.code > 255) throw bad(`term "${text}": exit code must be 0..255`);
      terms.push({ count, action, text: m[2].trim() });
    });
    out.set(name as FailpointName, terms);
  }
  return out;
}

let active: Map<FailpointName, FailpointTerm[]> | undefined;

/** Parse FEDLORA_FAILPOINTS now (a process calls this at start so a bad spec stops it before
 *  it does anything); later calls return the cached table. */
export function loadFailpoints(env: NodeJS.ProcessEnv = process.env): Map<FailpointName, FailpointTerm[]> {
  active ??= env[FAILPOINTS_ENV] ? parseFailpoints(env[FAILPOINTS_ENV]) : new Map();
  return active;
}

/** Mark a failpoint. Returns at once unless FEDLORA_FAILPOINTS configures this name. */
export async function failpoint(name: FailpointName): Promise<void> {
  const terms = (active ?? loadFailpoints()).get(name);
  if (!terms || terms.length === 0) return;
  const t = terms[0];
  if (--t.count <= 0) terms.shift(); // Infinity stays Infinity
  const a = t.action;
  process.stderr.write(`fedlora failpoint ${name} reached: ${t.text}\n`);
  if (a.kind === 'pause') await new Promise((r) => setTimeout(r, a.ms));
  else if (a.kind === 'exit') process.exit(a.code);
}

/** Forget the parsed table (tests that change FEDLORA_FAILPOINTS in-process). */
export function resetFailpoints(): void {
  active = undefined;
}
