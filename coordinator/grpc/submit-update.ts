// Federation.SubmitUpdate: a client stream (header, chunks..., trailer) driven through the
// coordinator's intake (coordinator/rounds/intake.ts). Messages are pulled one at a time, so a
// site cannot send further ahead than the intake persists (plus the stream's small buffer).
// Chunks go through the update's UploadSpool (group commit; shared by the streams of one
// update); a stream that ends without its trailer commits what was written, and the answer
// reports that committed progress.
import * as grpc from '@grpc/grpc-js';
import { fail, toGrpcError } from '../../shared/errors.ts';
import type { SubmitUpdateResponse, UpdateHeader, UpdateMessage } from '../../shared/proto.ts';
import { verifyUpdateSignature } from '../../shared/update-signature.ts';
import type { CallerIdentity, CallWithAuth } from '../auth.ts';
import type { RoundEngine } from '../rounds/index.ts';
import { admitUpdate, finishUpdate, openUpload, type HeaderVerifier } from '../rounds/intake.ts';
import type { UploadSpool } from '../rounds/upload-spool.ts';
import { LOCAL_ADAPTER_PAYLOAD, type LocalAdapterUpload } from '../crosseval/cross-eval.ts';
import type { UpdateRow } from '../store/store.ts';
import type { SurvivedErrors } from '../metrics/survived-errors.ts';

export interface SubmitUpdateDeps {
  engine: RoundEngine;
  maxUpdateBytes: number;
  requireUpdateSignature: boolean;
  /** Bytes per group commit (undefined: the intake's default). */
  commitGroupBytes?: number;
  /** The caller's identity (recorded as seen), for the header. */
  who(call: CallWithAuth, method: string): CallerIdentity;
  /** The same check without the bookkeeping, for every further message. */
  authenticate(call: CallWithAuth, method: string): CallerIdentity;
  headerVerifier(call: CallWithAuth): HeaderVerifier;
  peerPem(call: CallWithAuth): string | undefined;
  auditAdmissionRefused(siteId: string, h: UpdateHeader, e: unknown): void;
  /** Where a failed commit of a cut upload is logged and counted (the stream's own error, if any, goes to the site). */
  errors: Pick<SurvivedErrors, 'record'>;
  /** Cross-site evaluation: a site's local-only adapter travels on the same RPC. */
  beginLocalUpload(siteId: string, h: UpdateHeader, peerPem: string | undefined): LocalAdapterUpload;
}

type Call = grpc.ServerReadableStream<UpdateMessage, SubmitUpdateResponse>;

const progress = (row: Pick<UpdateRow, 'update_id' | 'received_bytes' | 'received_chunks' | 'status' | 'sha256'>): SubmitUpdateResponse => ({
  updateId: row.update_id, receivedBytes: row.received_bytes, receivedChunks: row.received_chunks, complete: row.status === 'accepted', sha256: row.status === 'accepted' ? row.sha256 : '',
});

async function receive(d: SubmitUpdateDeps, call: Call): Promise<SubmitUpdateResponse> {
  const { engine } = d;
  let caller: CallerIdentity | undefined;
  let updateId: string | undefined;
  let spool: UploadSpool | undefined;
  let local: LocalAdapterUpload | undefined;
  let result: SubmitUpdateResponse | undefined;
  try {
    for await (const m of call as AsyncIterable<UpdateMessage>) {
      if (result) continue; // answered already (a duplicate of a complete update): drain
      // CRL and site status on every message: a site revoked while it streams is cut off here
      const who = updateId === undefined ? d.who(call, 'SubmitUpdate') : d.authenticate(call, 'SubmitUpdate');
      if (m.part === 'header' && 'header' in m) {
        if (updateId) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', 'UpdateMessage: a second header in one stream');
        caller = who;
        const h = m.header;
        updateId = h.updateId;
        if (h.payloadKind === LOCAL_ADAPTER_PAYLOAD) {
          local = d.beginLocalUpload(who.siteId, h, d.peerPem(call));
          continue;
        }
        let admitted: ReturnType<typeof admitUpdate>;
        try {
          admitted = admitUpdate(engine, who.siteId, h, d.maxUpdateBytes, d.headerVerifier(call));
        } catch (e) {
          d.auditAdmissionRefused(who.siteId, h, e);
          throw e;
        }
        const { row, complete } = admitted;
        if (complete) result = { ...progress(row), receivedBytes: row.size };
        else if (h.resumeFromChunk > row.received_chunks) {
          throw fail('FEDLORA_ERR_CHUNK_ORDER', `update ${row.update_id}: resume_from_chunk ${h.resumeFromChunk}, but only ${row.received_chunks} chunks are persisted`);
        } else spool = openUpload(engine, row.update_id, { groupBytes: d.commitGroupBytes });
        continue;
      }
      if (!updateId || !caller) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', 'UpdateMessage: the first message must be the header');
      if (local) {
        if (m.part === 'chunk' && 'chunk' in m) local.chunk(m.chunk);
        else if (m.part === 'trailer' && 'trailer' in m) result = local.finish(m.trailer.chunks);
        continue;
      }
      if (m.part === 'chunk' && 'chunk' in m) {
        await spool!.append(m.chunk);
        continue;
      }
      if (m.part === 'trailer' && 'trailer' in m) {
        const row = await spool!.commit();
        if (m.trailer.chunks !== row.received_chunks) {
          throw fail('FEDLORA_ERR_CHUNK_ORDER', `update ${updateId}: trailer says ${m.trailer.chunks} chunks, ${row.received_chunks} received`);
        }
        const seen = spool!.seen();
        const done = spool!;
        spool = undefined;
        await done.release();
        const pem = d.peerPem(call);
        const fin = await finishUpdate(engine, updateId, (r) => {
          if (!r.signature || r.signature.length === 0) return !d.requireUpdateSignature;
          return !!pem && verifyUpdateSignature(pem, { updateId: r.update_id, jobId: r.job_id, round: r.round, baseVersion: r.base_version, sha256: r.sha256, numExamples: r.examples }, r.signature);
        }, seen);
        result = { updateId, receivedBytes: fin.size, receivedChunks: fin.received_chunks, complete: true, sha256: fin.sha256 };
      }
    }
    if (result) return result;
    // The site ended the stream without a trailer: what it sent is committed; say how much.
    const done = spool;
    spool = undefined;
    await done?.release();
    const row = updateId ? engine.store.update(updateId) : undefined;
    return { updateId: updateId ?? '', receivedBytes: row?.received_bytes ?? 0, receivedChunks: row?.received_chunks ?? 0, complete: false, sha256: '' };
  } finally {
    // cut, refused or failed: keep what was written (the site resumes from there)
    await spool?.release().catch((e) => d.errors.record('upload_commit', e, { update: updateId }));
  }
}

export function submitUpdateHandler(d: SubmitUpdateDeps): grpc.handleClientStreamingCall<UpdateMessage, SubmitUpdateResponse> {
  return (call, cb) => {
    receive(d, call).then(
      (res) => cb(null, res),
      (e) => { if (!call.cancelled) cb(toGrpcError(e) as grpc.ServiceError); },
    );
  };
}
