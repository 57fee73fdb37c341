// FetchAdapter: the coordinator streams a file as a header then chunks (streamFile); the
// site writes them to <out>.part with per-chunk verification, resumes from the bytes it
// already has, checks the whole sha256 and renames the file into place (downloadAdapter).
import { existsSync, statSync } from 'node:fs';
import { open, rename, rm, truncate } from 'node:fs/promises';
import * as grpc from '@grpc/grpc-js';
import { fail, fromGrpcError, isFedloraError, toGrpcError } from '../errors.ts';
import type { AdapterChunk, AdapterHeader, FederationClient, FetchAdapterRequest } from '../proto.ts';
import { checkChunkSize, DEFAULT_CHUNK_BYTES, ioError } from './chunks.ts';
import { sha256File, sha256Hex } from '../hash.ts';

/**
 * Coordinator side: send `header` (chunk_size/total_bytes filled from the file if 0) and the
 * file's bytes from `offset` on, chunk by chunk, honouring back-pressure. Ends the call.
 * Chunk i covers [i*chunk_size, (i+1)*chunk_size); a resume offset inside a chunk makes the
 * first chunk start there (its `offset` field says so).
 */
export async function streamFile(call: grpc.ServerWritableStream<FetchAdapterRequest, AdapterChunk>, header: Partial<AdapterHeader>, file: string, offset = 0): Promise<void> {
  let cancelled = false;
  call.on('cancelled', () => (cancelled = true));
  try {
    let size: number;
    try {
      size = statSync(file).size;
    } catch (e) {
      throw ioError(e, `adapter file ${file}`);
    }
    const chunkSize = header.chunkSize || DEFAULT_CHUNK_BYTES;
    checkChunkSize(chunkSize, `streamFile ${file}`);
    if (!Number.isSafeInteger(offset) || offset < 0 || offset > size) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `FetchAdapterRequest.offset ${offset} outside 0..${size}`);
    const h: AdapterHeader = {
      ref: header.ref ?? null, adapterConfigJson: header.adapterConfigJson ?? Buffer.alloc(0), manifestJson: header.manifestJson ?? Buffer.alloc(0),
      signature: header.signature ?? Buffer.alloc(0), chunkSize, totalBytes: size, signerCertificatePem: header.signerCertificatePem ?? Buffer.alloc(0),
    };
    // Wait for 'drain', but never past a cancellation (a cancelled call never drains).
    const write = async (m: AdapterChunk) => {
      if (call.write(m) || cancelled) return;
      await new Promise<void>((resolve) => {
        const go = () => {
          call.off('drain', go);
          call.off('cancelled', go);
          call.off('close', go);
          resolve();
        };
        call.on('drain', go);
        call.on('cancelled', go);
        call.on('close', go);
      });
    };
    await write({ header: h });
    const fh = await open(file, 'r');
    try {
      let pos = offset;
      while (pos < size && !cancelled) {
        const index = Math.floor(pos / chunkSize);
        const end = Math.min(size, (index + 1) * chunkSize);
        const buf = Buffer.allocUnsafe(end - pos);
        const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
        if (bytesRead !== buf.length) throw fail('FEDLORA_ERR_IO', `${file} shrank while streaming`);
        await write({ chunk: { index, offset: pos, data: buf, sha256: sha256Hex(buf) } });
        pos = end;
      }
    } finally {
      await fh.close();
    }
    if (!cancelled) call.end();
  } catch (e) {
    if (!cancelled) call.emit('error', toGrpcError(e));
  }
}

export interface DownloadOptions {
  /** Expected whole-file sha256 (e.g. from a Task's AdapterRef); else the header's ref.sha256. */
  sha256?: string;
  deadlineMs?: number;
  /** Test hook: return 'cut' to drop the stream after chunk `index` was written. */
  onChunk?: (index: number) => void | 'cut';
}

export interface DownloadResult {
  header: AdapterHeader;
  path: string;
  bytes: number;
  resumedFrom: number;
  sha256: string;
}

/**
 * Site side of FetchAdapter into `outFile` (via `outFile.part`, resuming from its size).
 * Every chunk's sha256 and offset are checked before it is written; at the end the whole
 * file's sha256 must equal the expected one, or the partial file is deleted.
 */
export async function downloadAdapter(client: FederationClient, req: Omit<Partial<FetchAdapterRequest>, 'offset'> & { jobId: string; version: number }, outFile: string, o: DownloadOptions = {}): Promise<DownloadResult> {
  const part = `${outFile}.part`;
  const resumedFrom = existsSync(part) ? statSync(part).size : 0;
  const stream = client.fetchAdapter({ ...req, offset: resumedFrom }, new grpc.Metadata(), { deadline: Date.now() + (o.deadlineMs ?? 600_000) });
  const fh = await open(part, resumedFrom > 0 ? 'r+' : 'w', 0o600);
  let header: AdapterHeader | null = null;
  let pos = resumedFrom;
  let cut = false;
  try {
    for await (const m of stream as AsyncIterable<AdapterChunk>) {
      if (m.part === 'header' || (!m.part && m.header)) {
        if (header) throw fail('FEDLORA_ERR_ADAPTER', `FetchAdapter ${req.jobId}@${req.version}: second header in the stream`);
        header = m.header!;
        if (header.totalBytes < resumedFrom) throw fail('FEDLORA_ERR_ADAPTER', `FetchAdapter ${req.jobId}@${req.version}: ${part} has ${resumedFrom} bytes, more than the ${header.totalBytes} offered`);
        await truncate(part, resumedFrom);
        continue;
      }
      if (!header) throw fail('FEDLORA_ERR_ADAPTER', `FetchAdapter ${req.jobId}@${req.version}: chunk before header`);
      const c = m.chunk!;
      const data = Buffer.from(c.data);
      if (c.offset !== pos) throw fail('FEDLORA_ERR_CHUNK_ORDER', `FetchAdapter ${req.jobId}@${req.version}: chunk ${c.index} at offset ${c.offset}, expected ${pos}`);
      if (data.length > header.chunkSize || pos + data.length > header.totalBytes) throw fail('FEDLORA_ERR_CHUNK_SIZE', `FetchAdapter ${req.jobId}@${req.version}: chunk ${c.index} too large`);
      if (sha256Hex(data) !== c.sha256) throw fail('FEDLORA_ERR_CHUNK_HASH', `FetchAdapter ${req.jobId}@${req.version}: chunk ${c.index} sha256 mismatch`);
      try {
        await fh.write(data, 0, data.length, pos);
      } catch (e) {
        throw ioError(e, `writing ${part}`);
      }
      pos += data.length;
      if (o.onChunk?.(c.index) === 'cut') {
        cut = true;
        stream.cancel();
        break;
      }
    }
    await fh.sync();
  } catch (e) {
    stream.cancel();
    throw isFedloraError(e) ? e : fromGrpcError(e as grpc.ServiceError);
  } finally {
    await fh.close();
  }
  if (cut) throw fail('FEDLORA_ERR_UNAVAILABLE', `FetchAdapter ${req.jobId}@${req.version}: stream cut after ${pos} bytes (kept in ${part})`);
  if (!header) throw fail('FEDLORA_ERR_ADAPTER', `FetchAdapter ${req.jobId}@${req.version}: empty stream`);
  if (pos !== header.totalBytes) throw fail('FEDLORA_ERR_UNAVAILABLE', `FetchAdapter ${req.jobId}@${req.version}: stream ended at ${pos} of ${header.totalBytes} bytes (kept in ${part}; call again to resume)`);
  const expected = o.sha256 || header.ref?.sha256 || '';
  if (!/^[0-9a-f]{64}$/.test(expected)) throw fail('FEDLORA_ERR_ADAPTER', `FetchAdapter ${req.jobId}@${req.version}: no sha256 to verify the download against (header ref.sha256 empty and none given)`);
  const got = await sha256File(part);
  if (got !== expected) {
    await rm(part, { force: true });
    throw fail('FEDLORA_ERR_UPDATE_HASH', `FetchAdapter ${req.jobId}@${req.version}: sha256 of the downloaded file is ${got}, expected ${expected} (partial file deleted)`);
  }
  await rename(part, outFile);
  return { header, path: outFile, bytes: pos, resumedFrom, sha256: got };
}
