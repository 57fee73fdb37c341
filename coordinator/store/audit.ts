// The coordinator's one tamper-evident audit log (shared/audit.ts) on the `audit_log` table of
// coordinator.sqlite. Every audit point calls `coordinatorAudit(db).append(...)` INSIDE the
// transaction of the state change it records, so an entry exists exactly when the change does
// (AuditLog.append nests as a savepoint). Secrets never go in: join tokens appear only as a
// short prefix of their sha256, admin tokens only by their configured name.
//
// Actions written (actor, subject; where):
//   token_issued      coordinator, site       enrollment.ts issueJoinToken (token_ref = sha256 prefix)
//   enroll            site, site              enrollment.ts enrollSite (serial, cert sha256, not_after)
//   cert_renewed      site, site              enrollment.ts renewSiteCertificate
//   revoke            operator, site          enrollment.ts revokeSite (serials, reason, discarded_updates)
//   job_submitted / job_cancelled  admin[:name], job   jobs/job-service.ts (with DP Poisson sampling:
//                     dp_eligible_sites, the job's fixed N sites)
//   job_completed / job_failed     coordinator, job    rounds/state-machine.ts
//   task              coordinator, task id    rounds/open-round.ts (one per selected site)
//   task_declined     site, task id           rounds/declines.ts
//   update_received   site, update id         rounds/intake.ts finishUpdate (sha256, size, examples,
//                     signature_sha256, site_norm, site_clipped, coordinator_norm, and for DP rounds
//                     dp_clip_norm, norm_after_clip, clipped_by_coordinator)
//   update_rejected   site, update id         rounds/intake.ts (signature/content/round closed) and
//                     grpc/federation.ts (admission: replay, signature, not selected, ...; code + reason)
//   round_failed      coordinator, job/rRaA   rounds/plain-collector.ts (discarded updates)
//   aggregate         coordinator, job/rRaA   rounds/aggregate-publish.ts (update ids, strategy metrics: DP clip/noise)
//   round_sampled     coordinator, job/rRaA   rounds/aggregate-publish.ts (DP Poisson sample of the round,
//                     once it is published: sample_rate, eligible_sites N, denominator, sampled, contributed)
//   publish           coordinator, job/vN     rounds/aggregate-publish.ts (version, sha256, manifest_sha256)
//   privacy_spend     coordinator, job        rounds/aggregate-publish.ts (epsilon after the round, delta, budget)
//   call_refused      unauthenticated, cert subject   grpc/federation.ts (revoked/unknown/expired; 1/min/cert)
//   admin_action / admin_denied   admin:<name> | anonymous, "METHOD /path"   http/admin-audit.ts
import type { Database } from 'better-sqlite3-multiple-ciphers';
import { AuditLog } from '../../shared/audit.ts';

const COORDINATOR_AUDIT_TABLE = 'audit_log';

const logs = new WeakMap<Database, AuditLog>();

/** The AuditLog of this connection (created once per connection; the table comes from
 *  migration 4, or from AuditLog itself on a data dir that has not been migrated yet). */
export function coordinatorAudit(db: Database): AuditLog {
  let l = logs.get(db);
  if (!l) logs.set(db, (l = new AuditLog(db, COORDINATOR_AUDIT_TABLE)));
  return l;
}

/** Append outside any caller transaction: BEGIN IMMEDIATE takes the write lock first, so a
 *  concurrent writer in another process (the `fedlora site revoke` CLI) makes it wait
 *  (busy_timeout) instead of failing on a stale WAL snapshot. */
export function appendNow(db: Database, actor: string, action: string, subject: string, details: Record<string, unknown>, at?: Date): void {
  const log = coordinatorAudit(db);
  db.transaction(() => log.append(actor, action, subject, details, at)).immediate();
}

