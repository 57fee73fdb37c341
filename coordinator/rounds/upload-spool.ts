// The writer of an admitted update's bytes: each chunk is checked (index, offset, size, sha256)
// and written to the update's .part file; progress is committed to SQLite in groups (group
// commit): after ONE fdatasync that covers every chunk of the group, never before it.
// GetUploadStatus and every answer to the site read that committed progress, so after a crash
// the resume point is never ahead of what is durable; bytes written but not committed are cut
// when the file is next opened. The fsync runs on the thread pool while the next chunks are
// received and written, so the stream does not wait for the disk.
// One spool per update, shared by every stream that carries it (a site that reconnects, or
// retries while its first stream is still open): chunks are applied one at a time in order, a
// chunk already written is skipped, so streams sending the same bytes cooperate.
// When the update is carried from byte 0, the whole-payload sha256 and the content check run
// over the chunks as they pass, and finishing needs no second read of the file.
import { constants, fsyncSync, openSync, closeSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { createHash, type Hash } from 'node:crypto';
import { dirname } from 'node:path';
import { fail, type FedloraError } from '../../shared/errors.ts';
import { failpoint } from '../../shared/failpoints.ts';
import type { Chunk } from '../../shared/proto.ts';
import type { AdapterLayout } from '../../shared/tensors.ts';
import type { CoordinatorStore, UpdateRow } from '../store/store.ts';
import { UpdateContentCheck, type UpdateShapes } from './validate-update.ts';
import { sha256Hex } from '../../shared/hash.ts';

export type ChunkIn = Pick<Chunk, 'index' | 'offset' | 'data' | 'sha256'>;

/** What the spool saw of an update it carried from byte 0 (finishUpdate skips re-reading). */
export interface SeenUpload {
  sha256: string;
  content: UpdateContentCheck;
}

export interface SpoolOptions {
  /** Commit progress once more than this many bytes are written but uncommitted (0: every chunk). */
  groupBytes: number;
}

/** The group size by default (config transfer.commit_group_bytes). */
export const GROUP_COMMIT_BYTES = 16 * 1024 * 1024;

// Chunk hashes (sha256Hex) run on the main thread, deliberately: WebCrypto's digest would run on
// the thread pool but copies every chunk first, and that garbage cost more (GC) than the hash here.

/** Why an update that is not 'receiving' takes no more chunks. */
export function notReceiving(row: Pick<UpdateRow, 'update_id' | 'status' | 'reason'>): FedloraError {
  return fail(row.status === 'rejected' ? 'FEDLORA_ERR_UPDATE_INVALID' : 'FEDLORA_ERR_ROUND_CLOSED', `update ${row.update_id} is ${row.status}${row.reason ? `: ${row.reason}` : ''}`);
}

function storeError(e: unknown, row: UpdateRow, index: number): Error {
  const code = (e as NodeJS.ErrnoException)?.code;
  // A full disk refuses this chunk only: progress stays at the last committed chunk, so the
  // site can resume once space is freed.
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return fail('FEDLORA_ERR_DISK_FULL', `update ${row.update_id}: chunk ${index} not stored, no space left on the coordinator's device (${row.path}); nothing was committed, retry later`);
  }
  if (typeof code === 'string') return fail('FEDLORA_ERR_IO', `update ${row.update_id}: storing chunk ${index} in ${row.path}: ${(e as Error).message}`);
  return e as Error;
}

// The spool of each update being received (key: data dir + update id), and the spools still
// closing: a new one opens the file only after the old one closed it.
const open_ = new Map<string, UploadSpool>();
const closing = new Map<string, Promise<void>>();

export class UploadSpool {
  private refs = 0;
  private readonly ready: Promise<void>;
  private queue: Promise<unknown>;
  private fh?: FileHandle;
  private written = { chunks: 0, bytes: 0 };
  private committed = { chunks: 0, bytes: 0 };
  private inflight?: Promise<void>;
  private failed?: unknown;
  private hash?: Hash;
  private content?: UpdateContentCheck;

  /** The update's spool (shared with other streams carrying it); release() it when done. */
  static acquire(store: CoordinatorStore, row: UpdateRow, dataDir: string, layout: AdapterLayout | UpdateShapes, o: SpoolOptions): UploadSpool {
    const key = `${dataDir}\0${row.update_id}`;
    let s = open_.get(key);
    if (!s) {
      s = new UploadSpool(store, row, key, layout, o);
      open_.set(key, s);
    }
    s.refs++;
    return s;
  }

  private constructor(private readonly store: CoordinatorStore, private row: UpdateRow, private readonly key: string, layout: AdapterLayout | UpdateShapes, private readonly o: SpoolOptions) {
    // Progress is read once a spool of the same update that is closing has committed and closed.
    this.ready = (closing.get(key) ?? Promise.resolve()).then(() => {
      const r = this.store.update(this.row.update_id) ?? this.row;
      this.row = r;
      this.written = this.committed = { chunks: r.received_chunks, bytes: r.received_bytes };
      if (r.received_bytes === 0 && r.status === 'receiving') {
        this.hash = createHash('sha256');
        this.content = new UpdateContentCheck(layout, r.size, `update ${r.update_id}`);
      }
    });
    this.queue = this.ready;
  }

  /** Run `fn` after every operation queued before it (chunks are applied in order). */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private current(): UpdateRow {
    const r = this.store.update(this.row.update_id);
    if (!r) throw fail('FEDLORA_ERR_NOT_FOUND', `update ${this.row.update_id} was never admitted (send its UpdateHeader first)`);
    if (r.status !== 'receiving') throw notReceiving(r);
    return r;
  }

  /** Open the .part file once, cutting bytes written but never committed. */
  private async file(): Promise<FileHandle> {
    if (this.fh) return this.fh;
    const path = this.row.path;
    let created = false;
    try {
      closeSync(openSync(path, constants.O_RDWR | constants.O_CREAT | constants.O_EXCL, 0o600));
      created = true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw storeError(e, this.row, this.written.chunks);
    }
    if (created) {
      // the file's name must survive a power cut as long as the progress recorded for it
      const dfd = openSync(dirname(path), 'r');
      try {
        fsyncSync(dfd);
      } finally {
        closeSync(dfd);
      }
    }
    const fh = await open(path, 'r+').catch((e) => { throw storeError(e, this.row, this.written.chunks); });
    const { size } = await fh.stat();
    if (size < this.committed.bytes) {
      // (only if the file was replaced behind our back: progress is recorded after its fsync)
      await fh.close();
      const lost = fail('FEDLORA_ERR_CHUNK_ORDER', `update ${this.row.update_id}: ${size} bytes on disk, ${this.committed.bytes} recorded; send it again from chunk 0`);
      this.store.advanceUploadProgress(this.row.update_id, 0, 0);
      this.written = this.committed = { chunks: 0, bytes: 0 };
      throw lost;
    }
    if (size > this.committed.bytes) await fh.truncate(this.committed.bytes);
    this.fh = fh;
    return fh;
  }

  /** Check and write one chunk (after the ones queued before it); commits a group when enough
   *  is written. A chunk that is already written is skipped. */
  append(c: ChunkIn): Promise<void> {
    return this.serial(() => this.appendNow(c));
  }

  private async appendNow(c: ChunkIn): Promise<void> {
    if (this.failed) throw this.failed;
    if (c.index < this.written.chunks) return; // sent again (a resumed or second stream)
    const row = (this.row = this.current());
    const id = row.update_id;
    if (c.index !== this.written.chunks || c.offset !== this.written.bytes) {
      throw fail('FEDLORA_ERR_CHUNK_ORDER', `update ${id}: chunk ${c.index} at offset ${c.offset}, expected chunk ${this.written.chunks} at offset ${this.written.bytes}`);
    }
    const data = c.data instanceof Uint8Array ? c.data : Buffer.from(c.data);
    const end = this.written.bytes + data.byteLength;
    if (data.byteLength === 0 || data.byteLength > row.chunk_size || end > row.size) {
      throw fail('FEDLORA_ERR_CHUNK_SIZE', `update ${id}: chunk ${c.index} has ${data.byteLength} bytes (chunk size ${row.chunk_size}, total ${row.size})`);
    }
    if (sha256Hex(data) !== c.sha256) throw fail('FEDLORA_ERR_CHUNK_HASH', `update ${id}: chunk ${c.index} sha256 mismatch (nothing stored)`);
    const fh = await this.file();
    const write = fh.write(data, 0, data.byteLength, this.written.bytes);
    write.catch(() => undefined);
    // while the thread pool writes: the running whole-payload hash and content check
    this.hash?.update(data);
    this.content?.feed(data);
    try {
      await write;
    } catch (e) {
      this.hash = this.content = undefined; // these bytes are no longer all seen in order
      throw storeError(e, row, c.index);
    }
    this.written = { chunks: c.index + 1, bytes: end };
    const pending = this.written.bytes - this.committed.bytes;
    if (pending > this.o.groupBytes && !this.inflight) {
      const p: Promise<void> = this.commitWritten().catch((e) => { this.failed = e; }).finally(() => { if (this.inflight === p) this.inflight = undefined; });
      this.inflight = p;
    }
    // never more than two groups written but not yet durable
    if (this.inflight && pending > 2 * this.o.groupBytes) await this.inflight;
    if (this.failed) throw this.failed;
  }

  /** fdatasync, then record what the sync covered. */
  private async commitWritten(): Promise<void> {
    const target = this.written;
    if (target.bytes === this.committed.bytes || !this.fh) return;
    await failpoint('coordinator.upload.written'); // crash tests: written, not durable, not recorded
    await this.fh.datasync();
    await failpoint('coordinator.upload.synced'); // crash tests: durable, not recorded
    if (!this.store.advanceUploadProgress(this.row.update_id, target.chunks, target.bytes)) throw notReceiving(this.current());
    this.committed = target;
  }

  /** Make everything appended so far durable and recorded; returns the update's row (whatever
   *  its status: another stream may have finished it). */
  commit(): Promise<UpdateRow> {
    return this.serial(async () => {
      while (this.inflight) await this.inflight;
      if (this.failed) throw this.failed;
      const now = this.store.update(this.row.update_id);
      if (now?.status === 'receiving') {
        await this.file(); // an opened file is cut to the committed length
        await this.commitWritten();
      }
      return (this.row = this.store.update(this.row.update_id) ?? this.row);
    });
  }

  /** The whole update passed through this spool from byte 0: its sha256 and content check
   *  (once; a second caller gets undefined and finishUpdate reads the file if still needed). */
  seen(): SeenUpload | undefined {
    if (!this.hash || !this.content || this.written.bytes !== this.row.size) return undefined;
    const sha256 = this.hash.digest('hex');
    this.hash = undefined;
    return { sha256, content: this.content };
  }

  /** This stream is done with the spool; the last one commits what was written (a cut stream
   *  resumes from there) and closes the file. */
  release(): Promise<void> {
    if (--this.refs > 0) return Promise.resolve();
    if (open_.get(this.key) === this) open_.delete(this.key);
    const done = this.serial(async () => {
      try {
        while (this.inflight) await this.inflight;
        if (!this.failed && this.fh) await this.commitWritten();
      } finally {
        await this.fh?.close().catch(() => undefined);
        this.fh = undefined;
      }
    });
    const settled = done.then(() => undefined, () => undefined);
    closing.set(this.key, settled);
    void settled.then(() => { if (closing.get(this.key) === settled) closing.delete(this.key); });
    return done;
  }
}
