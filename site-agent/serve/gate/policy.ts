// The release gate: a global adapter the site received is a candidate, served only once it
// passes the site's policy (serve.gate): each listed held-out metric no worse than the serving
// version's by more than its margin (metrics the site agent computed on this site's held-out
// data), the safety suite's overall pass rate at or above the floor, and — if the policy says
// so — an admin's approval; with serve.gate.review, also enough doctors' ratings and an unsafe
// rate whose 95% upper bound is under the floor. The reference for the base model is the job's version 0 (LoRA B = 0,
// so it computes exactly the base model). Every decision is audited.
import type Database from 'better-sqlite3-multiple-ciphers';
import type { AuditLog } from '../../../shared/audit.ts';
import { fail } from '../../../shared/errors.ts';
import { latestSafetyRun } from '../../eval/safety/suite.ts';
import { reviewOf } from '../review/aggregates.ts';
import type { GatePolicy } from '../config.ts';
import { currentServing, servingHistory, setServing, versionLabel, type ServingVersion } from './serving.ts';

export interface MetricValue {
  name: string;
  value: number;
  count: number;
}

export interface Candidate {
  jobId: string;
  version: number;
  label: string;
  sha256: string;
  dir: string;
  metrics: MetricValue[];
  receivedAt: string;
  status: 'candidate' | 'held' | 'passed' | 'approved' | 'rejected';
  checks: GateCheck[] | null;
  decidedAt: string | null;
  decidedBy: string | null;
}

export interface GateCheck {
  name: string;
  ok: boolean;
  detail: string;
}

type Row = { job_id: string; version: number; sha256: string; dir: string; metrics: string; received_at: string; status: Candidate['status']; checks: string | null; decided_at: string | null; decided_by: string | null };
const toCandidate = (r: Row): Candidate => ({
  jobId: r.job_id, version: r.version, label: versionLabel(r.job_id, r.version), sha256: r.sha256, dir: r.dir, metrics: JSON.parse(r.metrics), receivedAt: r.received_at,
  status: r.status, checks: r.checks ? JSON.parse(r.checks) : null, decidedAt: r.decided_at, decidedBy: r.decided_by,
});

export function recordCandidate(db: Database.Database, c: { jobId: string; version: number; sha256: string; dir: string; metrics: MetricValue[] }): void {
  db.prepare(`INSERT INTO gate_candidates (job_id, version, sha256, dir, metrics) VALUES (?,?,?,?,?)
      ON CONFLICT(job_id, version) DO UPDATE SET metrics = excluded.metrics, sha256 = excluded.sha256, dir = excluded.dir`).run(c.jobId, c.version, c.sha256, c.dir, JSON.stringify(c.metrics));
}

export function listCandidates(db: Database.Database): Candidate[] {
  return (db.prepare('SELECT * FROM gate_candidates ORDER BY job_id, version').all() as Row[]).map(toCandidate);
}

export function getCandidate(db: Database.Database, jobId: string, version: number): Candidate | null {
  const r = db.prepare('SELECT * FROM gate_candidates WHERE job_id = ? AND version = ?').get(jobId, version) as Row | undefined;
  return r ? toCandidate(r) : null;
}

/** Held-out metrics of what is served now: its candidate row, or the job's version 0 for the base model. */
function referenceMetrics(db: Database.Database, serving: ServingVersion, jobId: string): { label: string; metrics: MetricValue[] } | null {
  if (serving.jobId !== null && serving.version !== null) {
    const c = getCandidate(db, serving.jobId, serving.version);
    return c ? { label: serving.label, metrics: c.metrics } : null;
  }
  const v0 = getCandidate(db, jobId, 0);
  return v0 ? { label: `base (as ${jobId}/v0, LoRA B = 0)`, metrics: v0.metrics } : null;
}

/** The automatic checks of a candidate against the serving version (no side effects). */
export function evaluateGate(db: Database.Database, policy: GatePolicy, c: Candidate): GateCheck[] {
  const checks: GateCheck[] = [];
  const ref = referenceMetrics(db, currentServing(db), c.jobId);
  for (const m of policy.metrics) {
    const mine = c.metrics.find((x) => x.name === m.name);
    const theirs = ref?.metrics.find((x) => x.name === m.name);
    if (!mine || !theirs) {
      checks.push({ name: `heldout.${m.name}`, ok: false, detail: !mine ? `${c.label} has no held-out ${m.name} (withheld below evaluation.min_items?)` : `no held-out ${m.name} for the serving version ${ref?.label ?? 'base (no version 0 evaluated)'}` });
      continue;
    }
    const worse = m.higher_is_better ? theirs.value - mine.value : mine.value - theirs.value;
    checks.push({ name: `heldout.${m.name}`, ok: worse <= m.margin, detail: `${mine.value.toFixed(4)} vs ${theirs.value.toFixed(4)} (${ref!.label}); ${worse > 0 ? `worse by ${worse.toFixed(4)}` : 'not worse'}, margin ${m.margin}` });
  }
  const s = latestSafetyRun(db, c.sha256);
  checks.push(s
    ? { name: 'safety', ok: s.pass_rate >= policy.safety_floor, detail: `pass rate ${s.pass_rate.toFixed(3)} [${s.ci_low.toFixed(3)}, ${s.ci_high.toFixed(3)}] on ${s.prompts} prompts; floor ${policy.safety_floor}` }
    : { name: 'safety', ok: false, detail: 'no safety-suite run for this adapter yet' });
  if (policy.review) checks.push(reviewCheck(db, policy.review, c));
  return checks;
}

/** The doctors' review floor: the upper 95% Wilson bound of the unsafe rate, not the point
 *  estimate, so that a few safe ratings cannot pass a candidate whose rate is barely known. */
function reviewCheck(db: Database.Database, floor: NonNullable<GatePolicy['review']>, c: Candidate): GateCheck {
  const r = reviewOf(db, c.label);
  const unsafe = `unsafe ${r.unsafe.count}/${r.unsafe.n}, 95% upper bound ${r.unsafe.n ? r.unsafe.ci[1].toFixed(3) : 'n/a'}; floor ${floor.max_unsafe_rate}`;
  if (r.cases.rated < floor.min_rated) {
    return { name: 'review', ok: false, detail: `${r.cases.rated} of ${floor.min_rated} cases rated by doctors (${r.cases.sampled} sampled${r.cases.sampled < floor.min_rated ? ': sample more with `fedlora site review sample`' : ''}); ${unsafe}` };
  }
  return { name: 'review', ok: r.unsafe.ci[1] <= floor.max_unsafe_rate, detail: `${r.cases.rated} cases rated (at least ${floor.min_rated}); ${unsafe}` };
}

/** Run the automatic checks and record the decision: served at once when they pass (unless the
 *  policy wants an admin's approval: then 'passed', waiting), else 'held'. */
export function decideCandidate(db: Database.Database, audit: AuditLog, policy: GatePolicy, jobId: string, version: number): Candidate {
  const c = getCandidate(db, jobId, version);
  if (!c) throw fail('FEDLORA_ERR_NOT_FOUND', `no candidate ${versionLabel(jobId, version)} at this site`);
  const checks = evaluateGate(db, policy, c);
  const ok = checks.every((x) => x.ok);
  const status = !ok ? 'held' : policy.require_admin_approval ? 'passed' : 'approved';
  db.transaction(() => {
    db.prepare("UPDATE gate_candidates SET status = ?, checks = ?, decided_at = strftime('%Y-%m-%dT%H:%M:%fZ','now'), decided_by = 'gate' WHERE job_id = ? AND version = ?").run(status, JSON.stringify(checks), jobId, version);
    if (status === 'approved') setServing(db, { jobId, version, sha256: c.sha256, dir: c.dir }, 'promote', 'gate');
    audit.append('gate', 'gate_decision', c.label, { status, sha256: c.sha256, checks });
  }).immediate();
  return getCandidate(db, jobId, version)!;
}

/** After a doctor's rating of one of its cases: a candidate still undecided by an admin is decided
 *  again when the gate has a review floor, so the rating that meets the floor passes it (served at
 *  once unless the policy wants an admin's approval), and one that breaks it holds it. */
export function redecideAfterRating(db: Database.Database, audit: AuditLog, policy: GatePolicy, jobId: string | null, version: number | null): Candidate | null {
  if (!policy.review || jobId === null || version === null) return null;
  const c = getCandidate(db, jobId, version);
  if (!c || c.version === 0 || c.status === 'approved' || c.status === 'rejected') return null;
  return decideCandidate(db, audit, policy, jobId, version);
}

/** An admin serves a candidate: it must have passed the automatic checks, unless `override`
 *  (recorded in the audit log with the checks that failed). */
export function approveCandidate(db: Database.Database, audit: AuditLog, policy: GatePolicy, jobId: string, version: number, by: string, override = false): Candidate {
  const c = getCandidate(db, jobId, version);
  if (!c) throw fail('FEDLORA_ERR_NOT_FOUND', `no candidate ${versionLabel(jobId, version)} at this site (see \`fedlora site adapter candidates\`)`);
  const checks = evaluateGate(db, policy, c);
  const failing = checks.filter((x) => !x.ok);
  if (failing.length && !override) {
    throw fail('FEDLORA_ERR_GATE', `${c.label} does not pass the gate: ${failing.map((x) => `${x.name}: ${x.detail}`).join('; ')} (an admin may serve it anyway with --override, which is audited)`);
  }
  db.transaction(() => {
    db.prepare("UPDATE gate_candidates SET status = 'approved', checks = ?, decided_at = strftime('%Y-%m-%dT%H:%M:%fZ','now'), decided_by = ? WHERE job_id = ? AND version = ?").run(JSON.stringify(checks), by, jobId, version);
    setServing(db, { jobId, version, sha256: c.sha256, dir: c.dir }, 'approve', by);
    audit.append(by, 'gate_approve', c.label, { sha256: c.sha256, override, failing_checks: failing });
  }).immediate();
  return getCandidate(db, jobId, version)!;
}

/** Serve again what was served before the current version (the base model if nothing was). */
export function rollback(db: Database.Database, audit: AuditLog, by: string): ServingVersion {
  const history = servingHistory(db);
  if (history.length === 0) throw fail('FEDLORA_ERR_GATE', 'nothing to roll back: the base model is served and no version was ever served');
  const cur = history.at(-1)!;
  // The newest earlier version that is neither the current one nor one rolled back before.
  const rejected = new Set(listCandidates(db).filter((c) => c.status === 'rejected').map((c) => c.label));
  const prev = [...history].reverse().find((h) => h.label !== cur.label && !rejected.has(h.label)) ?? null;
  return db.transaction(() => {
    const v = setServing(db, prev ? { jobId: prev.jobId, version: prev.version, sha256: prev.sha256, dir: prev.dir } : { jobId: null, version: null, sha256: null, dir: null }, 'rollback', by);
    if (cur.jobId !== null) db.prepare("UPDATE gate_candidates SET status = 'rejected', decided_at = strftime('%Y-%m-%dT%H:%M:%fZ','now'), decided_by = ? WHERE job_id = ? AND version = ?").run(by, cur.jobId, cur.version);
    audit.append(by, 'gate_rollback', cur.label, { to: v.label, to_sha256: v.sha256 });
    return v;
  }).immediate();
}
