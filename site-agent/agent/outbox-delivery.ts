// Sending an outbox entry: the same update id and the same signed header every time, so the
// coordinator continues a half-finished upload from its last persisted chunk (GetUploadStatus)
// and answers an already accepted one "complete" without taking it twice. The outcome is
// committed on the site before anyone relies on it:
//   complete        -> acknowledged + egress audit entry (one transaction), bytes deleted
//   final refusal   -> discarded with the coordinator's reason + audit entry, bytes deleted
//   anything else   -> stays pending (connection lost, coordinator disk full, ...): resumed
//                      when the task comes again or at the next agent start.

import { existsSync } from 'node:fs';
import { FedloraError, fail, isFedloraError, type ErrorCode } from '../../shared/errors.ts';
import type { AuditLog } from '../../shared/audit.ts';
import type { AgentLogger } from './task-context.ts';
import type { SiteOutbox, OutboxEntry } from './outbox.ts';
import type { FederationWire, SubmitResult } from './wire.ts';

/** Answers after which the coordinator will never take this update id. */
const FINAL_REFUSALS: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'FEDLORA_ERR_ROUND_CLOSED', // round/attempt closed, task cancelled, update discarded there
  'FEDLORA_ERR_NOT_SELECTED', // no such task for this site
  'FEDLORA_ERR_UPDATE_INVALID', // rejected (content, base version) or its row is 'rejected'
  'FEDLORA_ERR_UPDATE_NONFINITE',
  'FEDLORA_ERR_SHAPE',
  'FEDLORA_ERR_SAFETENSORS',
  'FEDLORA_ERR_SIGNATURE',
  'FEDLORA_ERR_REPLAY',
  'FEDLORA_ERR_JOB_STATE',
]);

export interface DeliveryDeps {
  siteId: string;
  wire: FederationWire;
  outbox: SiteOutbox;
  audit: AuditLog;
  log: AgentLogger;
}

function asFedlora(e: unknown): FedloraError {
  return isFedloraError(e) ? e : new FedloraError('FEDLORA_ERR_UNAVAILABLE', (e as Error)?.message ?? String(e));
}

/** Mark an entry discarded (bytes deleted) and say so in the site audit log and the log. */
export function discardEntry(d: DeliveryDeps, e: OutboxEntry, code: string, reason: string): void {
  d.outbox.discard(e.updateId, `${code}: ${reason}`, () => {
    d.audit.append(d.siteId, 'update_discarded', `${e.jobId}/${e.round}`, {
      update_id: e.updateId, task_id: e.taskId, code, reason: reason.slice(0, 2000), bytes: e.header.totalBytes, sha256: e.header.sha256,
      // chunks sent before the refusal did leave the site; the coordinator deletes them
      note: 'the coordinator will not use this update; any chunks it received are deleted there',
    });
  });
  d.log.warn({ job: e.jobId, round: e.round, task: e.taskId, update: e.updateId, code, reason }, 'pending update discarded');
}

/**
 * Send (or resume) one pending entry. Resolves once the coordinator acknowledged it complete
 * and that is committed here; throws the coordinator's error otherwise (after discarding the
 * entry when the error is final).
 */
export async function deliverEntry(d: DeliveryDeps, e: OutboxEntry): Promise<SubmitResult> {
  if (e.state !== 'pending') throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `outbox: update ${e.updateId} is ${e.state}, not pending`);
  if (!existsSync(e.file)) {
    discardEntry(d, e, 'FEDLORA_ERR_IO', `the update's bytes ${e.file} are gone`);
    throw fail('FEDLORA_ERR_IO', `outbox: update ${e.updateId}: ${e.file} is missing; discarded`);
  }
  let r: SubmitResult;
  try {
    r = await d.wire.submitUpdate(e.header, e.file);
  } catch (err) {
    const fe = asFedlora(err);
    if (FINAL_REFUSALS.has(fe.code)) discardEntry(d, e, fe.code, fe.message);
    throw fe;
  }
  if (!r.complete) {
    // The stream ended without a verdict: what is persisted there stays; resume later.
    throw fail('FEDLORA_ERR_UNAVAILABLE', `update ${e.updateId}: the coordinator ended the upload at ${r.receivedBytes} of ${e.header.totalBytes} bytes without completing it`);
  }
  if (r.sha256 !== e.header.sha256) {
    const msg = `coordinator acknowledged update ${e.updateId} with sha256 ${r.sha256}; the site sent ${e.header.sha256}`;
    discardEntry(d, e, 'FEDLORA_ERR_UPDATE_HASH', msg);
    throw fail('FEDLORA_ERR_UPDATE_HASH', msg);
  }
  d.outbox.acknowledge(e.updateId, () => {
    d.audit.append(d.siteId, 'egress', `${e.jobId}/${e.round}`, {
      what: 'adapter update',
      update_id: e.updateId,
      payload_kind: e.info.payloadKind,
      tensors: e.info.tensors,
      bytes: e.header.totalBytes,
      sha256: e.header.sha256,
      l2_norm: e.info.l2Norm,
      num_examples: e.info.numExamples,
      resumed_from_chunk: r.resumedFromChunk ?? 0,
      to: 'coordinator',
    });
  });
  d.log.info({ job: e.jobId, round: e.round, task: e.taskId, update: e.updateId, bytes: e.header.totalBytes, norm: e.info.l2Norm, resumed_from_chunk: r.resumedFromChunk ?? 0 }, 'update uploaded');
  return r;
}
