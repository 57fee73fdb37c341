// Coordinator side of SubmitUpdate (client stream: header, chunks..., trailer) and
// GetUploadStatus. Every accepted chunk is appended to a spool file, fsynced, and its
// progress recorded in SQLite (table transfer_uploads) before the next message is read, so
// an interrupted upload resumes from the last persisted chunk. At the trailer the whole
// sha256 is checked, the caller's onComplete validates the content, and the file moves
// atomically to its final place. A duplicate of a completed update gets the same response.
import type { Database } from 'better-sqlite3';
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { createHash, type Hash } from 'node:crypto';
import { dirname, join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { fail, toGrpcError } from '../errors.ts';
import type { Chunk, SubmitUpdateResponse, UpdateHeader, UpdateMessage, UploadStatusResponse } from '../proto.ts';
import { chunkCount, checkChunkSize, ioError, MAX_CHUNK_BYTES, MIN_UPLOAD_CHUNK_BYTES, sha256File, sha256Hex, sha256HexAsync } from './chunks.ts';

const UPDATE_ID_RE = /^[A-Za-z0-9._-]{1,128}$/;

export interface CompletedUpload {
  siteId: string;
  header: UpdateHeader;
  /** Where the verified bytes are while onComplete runs (the spool file). */
  path: string;
  /** Where they will be once accepted. */
  finalPath: string;
  totalBytes: number;
  sha256: string;
}

export interface UploadReceiverOptions {
  db: Database;
  spoolDir: string; // e.g. <dataDir>/uploads/spool
  finalDir: string; // e.g. <dataDir>/uploads/complete; files land at <finalDir>/<siteId>/<updateId>.bin
  minChunkBytes?: number; // default 64 KiB (a site's smallest network.chunk_size)
  maxChunkBytes?: number; // default 4 MiB
  maxTotalBytes?: number; // default 64 GiB
  /**
   * Validate the verified bytes (tensor names/shapes/NaN: C3's side); throw a FedloraError to
   * reject. Called once per accepted update (again only if a crash hit before completion, so
   * make it idempotent on update id). A rejection deletes the bytes and the upload record.
   */
  onComplete?: (u: CompletedUpload) => Promise<void> | void;
}

interface Row {
  update_id: string;
  site_id: string;
  header_json: string;
  total_bytes: number;
  sha256: string;
  chunk_size: number;
  received_chunks: number;
  received_bytes: number;
  complete: number;
  final_path: string;
}

function ensureSchema(db: Database): void {
  db.exec(`
    CREATE TABLE IF NOT EXISTS transfer_uploads (
      update_id TEXT PRIMARY KEY,
      site_id TEXT NOT NULL,
      header_json TEXT NOT NULL,
      total_bytes INTEGER NOT NULL,
      sha256 TEXT NOT NULL,
      chunk_size INTEGER NOT NULL,
      received_chunks INTEGER NOT NULL,
      received_bytes INTEGER NOT NULL,
      complete INTEGER NOT NULL DEFAULT 0,
      final_path TEXT NOT NULL,
      created_at_ms INTEGER NOT NULL,
      updated_at_ms INTEGER NOT NULL
    );
  `);
}

function headerJson(h: UpdateHeader): string {
  return JSON.stringify({ ...h, signature: Buffer.from(h.signature ?? []).toString('base64'), metadataJson: Buffer.from(h.metadataJson ?? []).toString('base64') });
}

function headerFromJson(s: string): UpdateHeader {
  const o = JSON.parse(s);
  return { ...o, signature: Buffer.from(o.signature, 'base64'), metadataJson: Buffer.from(o.metadataJson, 'base64') };
}

/** Per-stream state: the open spool file and a running sha256 (when the stream saw every byte). */
interface StreamCtx {
  updateId?: string;
  fh?: FileHandle;
  hash?: Hash;
  hashedBytes: number;
}

/** Fields that must agree when an update id is sent again. */
const IDENTITY_FIELDS = ['taskId', 'jobId', 'round', 'baseVersion', 'totalBytes', 'sha256', 'chunkSize', 'payloadKind'] as const;

export class UploadReceiver {
  private readonly o: Required<Omit<UploadReceiverOptions, 'onComplete'>> & Pick<UploadReceiverOptions, 'onComplete'>;
  /** Per-update promise chains: all work on one update id runs in order, across streams. */
  private readonly chains = new Map<string, Promise<unknown>>();
  /** The stream that currently owns an update id; an older stream stops at its next message. */
  private readonly owners = new Map<string, object>();

  constructor(o: UploadReceiverOptions) {
    this.o = { minChunkBytes: MIN_UPLOAD_CHUNK_BYTES, maxChunkBytes: MAX_CHUNK_BYTES, maxTotalBytes: 64 * 1024 ** 3, ...o };
    ensureSchema(o.db);
    mkdirSync(o.spoolDir, { recursive: true, mode: 0o700 });
    mkdirSync(o.finalDir, { recursive: true, mode: 0o700 });
    this.recover();
  }

  private spoolPath(siteId: string, updateId: string): string {
    return join(this.o.spoolDir, `${siteId}__${updateId}.part`);
  }

  /** Finish renames interrupted by a crash after the record was marked complete. */
  private recover(): void {
    const rows = this.o.db.prepare('SELECT * FROM transfer_uploads WHERE complete = 1').all() as Row[];
    for (const r of rows) {
      const spool = this.spoolPath(r.site_id, r.update_id);
      if (!existsSync(r.final_path) && existsSync(spool)) {
        mkdirSync(dirname(r.final_path), { recursive: true });
        renameSync(spool, r.final_path);
      }
    }
  }

  private row(updateId: string): Row | undefined {
    return this.o.db.prepare('SELECT * FROM transfer_uploads WHERE update_id = ?').get(updateId) as Row | undefined;
  }

  private serial<T>(updateId: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.chains.get(updateId) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => undefined);
    this.chains.set(updateId, tail);
    void tail.then(() => {
      if (this.chains.get(updateId) === tail) this.chains.delete(updateId);
    });
    return next;
  }

  /** GetUploadStatus for the calling site. */
  status(siteId: string, updateId: string): UploadStatusResponse {
    const r = this.row(updateId);
    if (!r) return { known: false, receivedChunks: 0, receivedBytes: 0, complete: false };
    if (r.site_id !== siteId) throw fail('FEDLORA_ERR_PERMISSION', `update ${updateId} belongs to another site`);
    return { known: true, receivedChunks: r.received_chunks, receivedBytes: r.received_bytes, complete: r.complete === 1 };
  }

  private response(r: Row): SubmitUpdateResponse {
    return { updateId: r.update_id, receivedBytes: r.received_bytes, receivedChunks: r.received_chunks, complete: r.complete === 1, sha256: r.complete === 1 ? r.sha256 : '' };
  }

  private validateHeader(h: UpdateHeader | null | undefined): UpdateHeader {
    if (!h) throw fail('FEDLORA_ERR_UPDATE_INVALID', 'UpdateMessage[0] must be a header');
    if (!UPDATE_ID_RE.test(h.updateId)) throw fail('FEDLORA_ERR_UPDATE_INVALID', `UpdateHeader.update_id ${JSON.stringify(h.updateId)} must match ${UPDATE_ID_RE}`);
    if (!/^[0-9a-f]{64}$/.test(h.sha256)) throw fail('FEDLORA_ERR_UPDATE_INVALID', `UpdateHeader.sha256 must be 64 lowercase hex characters (update ${h.updateId})`);
    if (!Number.isSafeInteger(h.totalBytes) || h.totalBytes <= 0) throw fail('FEDLORA_ERR_UPDATE_INVALID', `UpdateHeader.total_bytes must be > 0 (update ${h.updateId})`);
    if (h.totalBytes > this.o.maxTotalBytes) throw fail('FEDLORA_ERR_CHUNK_SIZE', `UpdateHeader.total_bytes ${h.totalBytes} exceeds the limit of ${this.o.maxTotalBytes} bytes (update ${h.updateId})`);
    checkChunkSize(h.chunkSize, `UpdateHeader.chunk_size (update ${h.updateId})`, this.o.minChunkBytes, this.o.maxChunkBytes);
    if (!h.jobId) throw fail('FEDLORA_ERR_UPDATE_INVALID', `UpdateHeader.job_id is empty (update ${h.updateId})`);
    return h;
  }

  /** Handle one header: returns the row to continue with (complete rows are answered at once). */
  private begin(siteId: string, h: UpdateHeader): Row {
    const db = this.o.db;
    const existing = this.row(h.updateId);
    if (existing) {
      if (existing.site_id !== siteId) throw fail('FEDLORA_ERR_PERMISSION', `update id ${h.updateId} belongs to another site`);
      const old = headerFromJson(existing.header_json);
      for (const f of IDENTITY_FIELDS) {
        if (old[f] !== h[f]) throw fail('FEDLORA_ERR_REPLAY', `update id ${h.updateId} was already used with ${f}=${JSON.stringify(old[f])}, this header says ${JSON.stringify(h[f])}`);
      }
      if (existing.complete === 1) return existing;
      if (h.resumeFromChunk > existing.received_chunks) {
        throw fail('FEDLORA_ERR_CHUNK_ORDER', `UpdateHeader.resume_from_chunk ${h.resumeFromChunk} is past the ${existing.received_chunks} chunks persisted for update ${h.updateId}`);
      }
      return existing;
    }
    if (h.resumeFromChunk !== 0) throw fail('FEDLORA_ERR_CHUNK_ORDER', `UpdateHeader.resume_from_chunk ${h.resumeFromChunk} for unknown update ${h.updateId} (start at 0)`);
    const now = Date.now();
    const finalPath = join(this.o.finalDir, siteId, `${h.updateId}.bin`);
    try {
      closeSync(openSync(this.spoolPath(siteId, h.updateId), 'w', 0o600));
    } catch (e) {
      throw ioError(e, `creating spool file for update ${h.updateId}`);
    }
    db.prepare(`INSERT INTO transfer_uploads (update_id, site_id, header_json, total_bytes, sha256, chunk_size, received_chunks, received_bytes, complete, final_path, created_at_ms, updated_at_ms)
                VALUES (?, ?, ?, ?, ?, ?, 0, 0, 0, ?, ?, ?)`).run(h.updateId, siteId, headerJson(h), h.totalBytes, h.sha256, h.chunkSize, finalPath, now, now);
    return this.row(h.updateId)!;
  }

  /** Validate, write, fsync and record one chunk. Returns the updated row. */
  private async appendChunk(r: Row, c: Chunk, ctx: StreamCtx): Promise<Row> {
    const id = r.update_id;
    const data = Buffer.from(c.data ?? []);
    if (data.length > r.chunk_size) throw fail('FEDLORA_ERR_CHUNK_SIZE', `chunk ${c.index} of update ${id} has ${data.length} bytes, more than the chunk size ${r.chunk_size}`);
    if (c.index < r.received_chunks) {
      // A resend of a chunk we already persisted (the site did not see our progress): skip it,
      // but still refuse corrupted data so the site learns about a broken path.
      if (sha256Hex(data) !== c.sha256) throw fail('FEDLORA_ERR_CHUNK_HASH', `chunk ${c.index} of update ${id}: sha256 of the data does not match the chunk's sha256`);
      return r;
    }
    if (c.index !== r.received_chunks) throw fail('FEDLORA_ERR_CHUNK_ORDER', `chunk ${c.index} of update ${id} arrived, expected chunk ${r.received_chunks}`);
    if (c.offset !== r.received_bytes) throw fail('FEDLORA_ERR_CHUNK_ORDER', `chunk ${c.index} of update ${id} says offset ${c.offset}, expected ${r.received_bytes}`);
    if (r.received_bytes + data.length > r.total_bytes) throw fail('FEDLORA_ERR_CHUNK_SIZE', `chunk ${c.index} of update ${id} goes past total_bytes ${r.total_bytes}`);
    const isLast = c.index === chunkCount(r.total_bytes, r.chunk_size) - 1;
    if (!isLast && data.length !== r.chunk_size) throw fail('FEDLORA_ERR_CHUNK_SIZE', `chunk ${c.index} of update ${id} has ${data.length} bytes; every chunk but the last must have ${r.chunk_size}`);
    if (isLast && r.received_bytes + data.length !== r.total_bytes) throw fail('FEDLORA_ERR_CHUNK_SIZE', `last chunk ${c.index} of update ${id} ends at ${r.received_bytes + data.length}, total_bytes is ${r.total_bytes}`);
    // Verify on the thread pool while the running whole-payload hash advances here; if the
    // chunk is bad the stream ends and its running hash is dropped with it.
    const verified = sha256HexAsync(data);
    if (r.received_bytes === 0) {
      ctx.hash = createHash('sha256');
      ctx.hashedBytes = 0;
    }
    if (ctx.hash && ctx.hashedBytes === r.received_bytes) {
      ctx.hash.update(data);
      ctx.hashedBytes += data.length;
    } else {
      ctx.hash = undefined;
    }
    if ((await verified) !== c.sha256) {
      ctx.hash = undefined;
      throw fail('FEDLORA_ERR_CHUNK_HASH', `chunk ${c.index} of update ${id}: sha256 of the data does not match the chunk's sha256 (nothing stored)`);
    }
    const spool = this.spoolPath(r.site_id, id);
    try {
      if (!ctx.fh) {
        ctx.fh = await open(spool, 'r+');
        // Cut bytes written before a crash but never recorded: the record is the truth.
        await ctx.fh.truncate(r.received_bytes);
      }
      await ctx.fh.write(data, 0, data.length, r.received_bytes);
      await ctx.fh.datasync();
    } catch (e) {
      throw ioError(e, `writing chunk ${c.index} of update ${id} to ${spool}`);
    }
    this.o.db.prepare('UPDATE transfer_uploads SET received_chunks = ?, received_bytes = ?, updated_at_ms = ? WHERE update_id = ?')
      .run(r.received_chunks + 1, r.received_bytes + data.length, Date.now(), id);
    return { ...r, received_chunks: r.received_chunks + 1, received_bytes: r.received_bytes + data.length };
  }

  private async finish(r: Row, trailerChunks: number, ctx: StreamCtx): Promise<Row> {
    const id = r.update_id;
    const expected = chunkCount(r.total_bytes, r.chunk_size);
    if (trailerChunks !== expected) throw fail('FEDLORA_ERR_UPDATE_INVALID', `UpdateTrailer.chunks is ${trailerChunks}, update ${id} has ${expected} chunks`);
    if (r.received_chunks !== expected || r.received_bytes !== r.total_bytes) {
      throw fail('FEDLORA_ERR_CHUNK_ORDER', `trailer of update ${id} after ${r.received_chunks}/${expected} chunks (${r.received_bytes}/${r.total_bytes} bytes)`);
    }
    const spool = this.spoolPath(r.site_id, id);
    await ctx.fh?.close();
    ctx.fh = undefined;
    // The running hash covers the file only if this stream wrote all of it; else re-read it.
    const got = ctx.hash && ctx.hashedBytes === r.total_bytes ? ctx.hash.digest('hex') : await sha256File(spool);
    ctx.hash = undefined;
    if (got !== r.sha256) {
      this.discard(r);
      throw fail('FEDLORA_ERR_UPDATE_HASH', `update ${id}: sha256 of the ${r.total_bytes} bytes received is ${got}, header says ${r.sha256} (upload discarded; send it again from chunk 0)`);
    }
    const header = headerFromJson(r.header_json);
    if (this.o.onComplete) {
      try {
        await this.o.onComplete({ siteId: r.site_id, header, path: spool, finalPath: r.final_path, totalBytes: r.total_bytes, sha256: r.sha256 });
      } catch (e) {
        this.discard(r);
        throw e;
      }
    }
    this.o.db.prepare('UPDATE transfer_uploads SET complete = 1, updated_at_ms = ? WHERE update_id = ?').run(Date.now(), id);
    try {
      mkdirSync(dirname(r.final_path), { recursive: true, mode: 0o700 });
      renameSync(spool, r.final_path);
      const dfd = openSync(dirname(r.final_path), 'r');
      try {
        fsyncSync(dfd);
      } finally {
        closeSync(dfd);
      }
    } catch (e) {
      throw ioError(e, `moving update ${id} to ${r.final_path}`);
    }
    return { ...r, complete: 1 };
  }

  /** Forget an upload and its bytes (hash mismatch or content rejected). */
  private discard(r: Row): void {
    rmSync(this.spoolPath(r.site_id, r.update_id), { force: true });
    this.o.db.prepare('DELETE FROM transfer_uploads WHERE update_id = ? AND complete = 0').run(r.update_id);
  }

  /**
   * Consume one SubmitUpdate stream for an authenticated site and resolve with the response.
   * Messages are pulled one at a time; nothing is read ahead of what has been persisted.
   */
  async receive(siteId: string, messages: AsyncIterable<UpdateMessage>): Promise<SubmitUpdateResponse> {
    const me = {};
    const ctx: StreamCtx = { hashedBytes: 0 };
    try {
      return await this.receiveWith(siteId, messages, me, ctx);
    } finally {
      await ctx.fh?.close().catch(() => undefined);
      if (ctx.updateId && this.owners.get(ctx.updateId) === me) this.owners.delete(ctx.updateId);
    }
  }

  private async receiveWith(siteId: string, messages: AsyncIterable<UpdateMessage>, me: object, ctx: StreamCtx): Promise<SubmitUpdateResponse> {
    let r: Row | undefined;
    let index = 0;
    for await (const m of messages) {
      const part = m.part ?? ('header' in m && m.header ? 'header' : 'chunk' in m && m.chunk ? 'chunk' : 'trailer');
      if (index === 0) {
        if (part !== 'header') throw fail('FEDLORA_ERR_UPDATE_INVALID', `UpdateMessage[0] is a ${part}, the first message must be the header`);
        const h = this.validateHeader((m as { header: UpdateHeader }).header);
        ctx.updateId = h.updateId;
        r = await this.serial(h.updateId, async () => {
          this.owners.set(h.updateId, me);
          return this.begin(siteId, h);
        });
        if (r.complete === 1) return this.response(r);
      } else {
        const row = r!;
        if (part === 'header') throw fail('FEDLORA_ERR_UPDATE_INVALID', `UpdateMessage[${index}] is a second header (update ${row.update_id})`);
        const res = await this.serial(row.update_id, async () => {
          if (this.owners.get(row.update_id) !== me) throw fail('FEDLORA_ERR_UNAVAILABLE', `update ${row.update_id} is being sent on a newer stream; this one stops`);
          const cur = this.row(row.update_id);
          if (!cur) throw fail('FEDLORA_ERR_UPDATE_INVALID', `update ${row.update_id} was discarded`);
          if (part === 'chunk') return { row: await this.appendChunk(cur, (m as { chunk: Chunk }).chunk, ctx), done: false };
          return { row: await this.finish(cur, (m as { trailer: { chunks: number } }).trailer.chunks, ctx), done: true };
        });
        r = res.row;
        if (res.done) return this.response(r);
      }
      index++;
    }
    if (!r) throw fail('FEDLORA_ERR_UPDATE_INVALID', 'SubmitUpdate stream ended without a header');
    throw fail('FEDLORA_ERR_UPDATE_INVALID', `SubmitUpdate stream for update ${r.update_id} ended without a trailer after ${r.received_chunks} chunks (progress kept; resume with GetUploadStatus)`);
  }
}

/**
 * gRPC handler for Federation.SubmitUpdate. `authenticate` returns the caller's site id
 * (e.g. `(call) => authenticateCall(call, deps).siteId`) or throws.
 */
export function submitUpdateHandler(receiver: UploadReceiver, authenticate: (call: grpc.ServerReadableStream<UpdateMessage, SubmitUpdateResponse>) => string): grpc.handleClientStreamingCall<UpdateMessage, SubmitUpdateResponse> {
  return (call, callback) => {
    let siteId: string;
    try {
      siteId = authenticate(call);
    } catch (e) {
      callback(toGrpcError(e) as grpc.ServiceError);
      return;
    }
    receiver.receive(siteId, call as AsyncIterable<UpdateMessage>).then(
      (res) => callback(null, res),
      (e) => callback(toGrpcError(e) as grpc.ServiceError),
    );
  };
}

/** gRPC handler for Federation.GetUploadStatus. */
export function uploadStatusHandler(receiver: UploadReceiver, authenticate: (call: grpc.ServerUnaryCall<{ updateId: string }, UploadStatusResponse>) => string): grpc.handleUnaryCall<{ updateId: string }, UploadStatusResponse> {
  return (call, callback) => {
    try {
      callback(null, receiver.status(authenticate(call), call.request.updateId));
    } catch (e) {
      callback(toGrpcError(e) as grpc.ServiceError);
    }
  };
}
