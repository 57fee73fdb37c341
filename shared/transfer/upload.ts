// Site side of SubmitUpdate: stream a file in chunks (never the whole payload in memory),
// resuming from what the coordinator says it has persisted (GetUploadStatus).
import { once } from 'node:events';
import { createHash } from 'node:crypto';
import { open, stat, type FileHandle } from 'node:fs/promises';
import * as grpc from '@grpc/grpc-js';
import { fail, fromGrpcError, type FedloraError } from '../errors.ts';
import { unary, type FederationClient, type SubmitUpdateResponse, type UpdateHeader, type UpdateMessage } from '../proto.ts';
import { checkChunkSize, chunkCount, DEFAULT_CHUNK_BYTES, hashFileChunks, ioError, MIN_UPLOAD_CHUNK_BYTES } from './chunks.ts';
import { sha256Hex } from '../hash.ts';

export interface UploadOptions {
  chunkSize?: number; // default 2 MiB (64 KiB..4 MiB)
  /** Ask GetUploadStatus first and continue from the persisted chunk (default true). */
  resume?: boolean;
  /** Tries in all when the connection breaks (UNAVAILABLE / cancelled); default 1. */
  attempts?: number;
  backoffMs?: number;
  deadlineMs?: number; // per attempt, default 10 minutes
  /** Test hook: called after each chunk is handed to the stream; may return 'cut'. */
  onChunkSent?: (index: number) => void | 'cut';
}

export interface UploadHeaderInput extends Partial<UpdateHeader> {
  updateId: string;
  jobId: string;
}

export interface UploadResult extends SubmitUpdateResponse {
  resumedFromChunk: number;
  attempts: number;
}

function isRetryable(e: FedloraError, raw: unknown): boolean {
  const code = (raw as grpc.ServiceError)?.code;
  return code === grpc.status.UNAVAILABLE || code === grpc.status.CANCELLED || code === grpc.status.DEADLINE_EXCEEDED || e.code === 'FEDLORA_ERR_UNAVAILABLE';
}

/**
 * Upload `file` as one update. Header fields not given are filled in: total_bytes and sha256
 * from the file, chunk_size from options, resume_from_chunk from GetUploadStatus.
 */
export async function uploadFile(client: FederationClient, header: UploadHeaderInput, file: string, o: UploadOptions = {}): Promise<UploadResult> {
  const chunkSize = header.chunkSize || o.chunkSize || DEFAULT_CHUNK_BYTES;
  checkChunkSize(chunkSize, `upload of ${file}`, MIN_UPLOAD_CHUNK_BYTES);
  let size: number;
  try {
    size = (await stat(file)).size;
  } catch (e) {
    throw ioError(e, `reading update file ${file}`);
  }
  if (header.totalBytes && header.totalBytes !== size) throw fail('FEDLORA_ERR_UPDATE_INVALID', `header total_bytes ${header.totalBytes} but ${file} has ${size} bytes`);
  // A caller that knows the sha256 (the site agent signs it) saves a read pass: chunk hashes are
  // computed as chunks go out, and the file is checked against it before the trailer is sent.
  // Otherwise one read pass gives the whole sha256 and every chunk's.
  let chunkHashes: string[] | undefined;
  if (!header.sha256) {
    const hashed = await hashFileChunks(file, chunkSize);
    if (hashed.size !== size) throw fail('FEDLORA_ERR_IO', `${file} changed size while hashing`);
    header = { ...header, sha256: hashed.sha256 };
    chunkHashes = hashed.chunks;
  }
  const full: UpdateHeader = {
    taskId: '', round: 0, baseVersion: 0, numExamples: 0, payloadKind: 'delta', signature: Buffer.alloc(0),
    updateNorm: 0, clipped: false, metadataJson: Buffer.alloc(0), ...header,
    sha256: header.sha256!, totalBytes: size, chunkSize, resumeFromChunk: 0,
  };
  const attempts = Math.max(1, o.attempts ?? 1);
  let lastErr: unknown;
  for (let attempt = 1; attempt <= attempts; attempt++) {
    try {
      let from = 0;
      if (o.resume !== false) {
        const st = await unary(client.getUploadStatus.bind(client), { updateId: full.updateId }, { deadline: Date.now() + 30_000 });
        if (st.known) from = st.complete ? chunkCount(size, chunkSize) : st.receivedChunks;
      }
      const res = await sendOnce(client, { ...full, resumeFromChunk: from }, file, chunkHashes, o);
      return { ...res, resumedFromChunk: from, attempts: attempt };
    } catch (e) {
      lastErr = e;
      const fe = (e as FedloraError).code ? (e as FedloraError) : fromGrpcError(e as grpc.ServiceError);
      if (attempt === attempts || !isRetryable(fe, e)) throw fe;
      await new Promise((r) => setTimeout(r, (o.backoffMs ?? 500) * attempt));
    }
  }
  throw lastErr;
}

/** Chunk buffers used in turn: one being read while up to two ride in the stream. A buffer is
 *  read into again only after the stream took the message that carried it (its write callback:
 *  serialised and handed to HTTP/2), so no fresh 4 MiB buffer per chunk for the GC to chase. */
const BUFFERS = 3;

async function readChunk(fh: FileHandle, h: UpdateHeader, i: number, file: string, into: Buffer): Promise<Buffer> {
  const offset = i * h.chunkSize;
  const len = Math.min(h.chunkSize, h.totalBytes - offset);
  const buf = into.subarray(0, len);
  let got = 0;
  while (got < len) {
    const { bytesRead } = await fh.read(buf, got, len - got, offset + got);
    if (bytesRead === 0) throw fail('FEDLORA_ERR_IO', `${file} shrank while uploading (chunk ${i})`);
    got += bytesRead;
  }
  return buf;
}

async function sendOnce(client: FederationClient, h: UpdateHeader, file: string, chunkHashes: string[] | undefined, o: UploadOptions): Promise<SubmitUpdateResponse> {
  const total = chunkCount(h.totalBytes, h.chunkSize);
  let settle!: { resolve: (r: SubmitUpdateResponse) => void; reject: (e: unknown) => void };
  const done = new Promise<SubmitUpdateResponse>((resolve, reject) => (settle = { resolve, reject }));
  const call = client.submitUpdate(new grpc.Metadata(), { deadline: Date.now() + (o.deadlineMs ?? 600_000) }, (err, res) => (err ? settle.reject(err) : settle.resolve(res!)));
  done.catch(() => undefined); // observed below or superseded by a local error
  let failed = false;
  call.on('error', () => (failed = true)); // the callback carries the error
  const ended = done.then(() => undefined, () => undefined);
  const write = async (m: UpdateMessage, taken?: () => void) => {
    if (!call.write(m, taken)) await Promise.race([once(call, 'drain'), ended]);
  };
  const slots = Array.from({ length: BUFFERS }, () => ({ buf: Buffer.allocUnsafe(h.chunkSize), free: Promise.resolve() }));
  const read = async (i: number) => {
    const slot = slots[i % BUFFERS];
    await Promise.race([slot.free, ended]);
    return { data: await readChunk(fh, h, i, file, slot.buf), slot };
  };
  const fh = await open(file, 'r');
  // Without the chunk hashes of a read pass, the whole file is hashed on the way (chunks before
  // the resume point are read for it, not sent) and must match the header before the trailer.
  // (A complete update needs no check: the coordinator accepted exactly this sha256.)
  const whole = chunkHashes || h.resumeFromChunk >= total ? undefined : createHash('sha256');
  try {
    await write({ header: h });
    const first = whole ? 0 : h.resumeFromChunk;
    let next = first < total ? read(first) : undefined;
    for (let i = first; i < total && !failed; i++) {
      const { data, slot } = await next!;
      next = i + 1 < total ? read(i + 1) : undefined; // read ahead while this one goes out
      next?.catch(() => undefined);
      whole?.update(data);
      if (i < h.resumeFromChunk) continue;
      let taken!: () => void;
      slot.free = new Promise<void>((r) => (taken = r));
      await write({ chunk: { index: i, offset: i * h.chunkSize, data, sha256: chunkHashes?.[i] ?? sha256Hex(data) } }, () => taken());
      if (o.onChunkSent?.(i) === 'cut') {
        failed = true;
        call.cancel();
        break;
      }
    }
    if (!failed) {
      const got = whole?.digest('hex');
      if (got !== undefined && got !== h.sha256) throw fail('FEDLORA_ERR_UPDATE_HASH', `header sha256 ${h.sha256} but ${file} hashes to ${got} (trailer not sent)`);
      await write({ trailer: { chunks: total } });
      call.end();
    }
  } catch (e) {
    call.cancel();
    throw e;
  } finally {
    await fh.close();
  }
  return done;
}
