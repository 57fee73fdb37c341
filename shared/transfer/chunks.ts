// Shared rules of the chunked transfers (SubmitUpdate uploads, FetchAdapter downloads):
// chunks of 1-4 MiB (uploads from 64 KiB), each carrying its index, byte offset and the hex sha256 of its data;
// the whole payload's sha256 travels in the header and is checked at the end.
import { createHash, webcrypto } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { fail } from '../errors.ts';

export const MiB = 1024 * 1024;
export const MIN_CHUNK_BYTES = 1 * MiB;
/** Uploads may use smaller chunks (site network.chunk_size >= 64 KiB, for flaky links). */
export const MIN_UPLOAD_CHUNK_BYTES = 64 * 1024;
export const MAX_CHUNK_BYTES = 4 * MiB;
export const DEFAULT_CHUNK_BYTES = 2 * MiB;

export function sha256Hex(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** sha256 on libuv's thread pool, so the event loop keeps moving bytes meanwhile. */
export async function sha256HexAsync(data: Uint8Array): Promise<string> {
  return Buffer.from(await webcrypto.subtle.digest('SHA-256', data)).toString('hex');
}

/**
 * One pass over a file: the whole sha256 and the sha256 of every chunk of `chunkSize`
 * (a few hex strings per MiB of chunk list, never the payload itself in memory).
 */
export async function hashFileChunks(path: string, chunkSize: number): Promise<{ size: number; sha256: string; chunks: string[] }> {
  const fh = await open(path, 'r');
  try {
    const whole = createHash('sha256');
    const chunks: string[] = [];
    const buf = Buffer.allocUnsafe(chunkSize);
    let size = 0;
    for (;;) {
      let filled = 0;
      while (filled < chunkSize) {
        const { bytesRead } = await fh.read(buf, filled, chunkSize - filled, size + filled);
        if (bytesRead === 0) break;
        filled += bytesRead;
      }
      if (filled === 0) break;
      const part = buf.subarray(0, filled);
      whole.update(part);
      chunks.push(createHash('sha256').update(part).digest('hex'));
      size += filled;
      if (filled < chunkSize) break;
    }
    return { size, sha256: whole.digest('hex'), chunks };
  } finally {
    await fh.close();
  }
}

/** Stream a file (or its first `length` bytes) through sha256 without loading it whole. */
export function sha256File(path: string, length?: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    if (length === 0) {
      resolve(h.digest('hex'));
      return;
    }
    const s = createReadStream(path, { highWaterMark: MiB, ...(length !== undefined ? { start: 0, end: length - 1 } : {}) });
    s.on('data', (b) => h.update(b as Buffer));
    s.on('error', reject);
    s.on('end', () => resolve(h.digest('hex')));
  });
}

export function checkChunkSize(chunkSize: number, where: string, min = MIN_CHUNK_BYTES, max = MAX_CHUNK_BYTES): void {
  if (!Number.isInteger(chunkSize) || chunkSize < min || chunkSize > max) {
    throw fail('FEDLORA_ERR_CHUNK_SIZE', `${where}: chunk size ${chunkSize} outside the allowed ${min}..${max} bytes`);
  }
}

export function chunkCount(totalBytes: number, chunkSize: number): number {
  return Math.ceil(totalBytes / chunkSize);
}

/** Map low-level file system errors to the catalogue (a full disk is the likely one). */
export function ioError(e: unknown, what: string): Error {
  const err = e as NodeJS.ErrnoException;
  if (err?.code === 'ENOSPC') return fail('FEDLORA_ERR_DISK_FULL', `${what}: no space left on device`);
  if (err && typeof err.code === 'string' && err.code.startsWith('E')) return fail('FEDLORA_ERR_IO', `${what}: ${err.message}`);
  return err as Error;
}
