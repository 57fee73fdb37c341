// Shared rules of the chunked transfers (SubmitUpdate uploads, FetchAdapter downloads):
// chunks of 1-4 MiB (uploads from 64 KiB), each carrying its index, byte offset and the hex sha256 of its data;
// the whole payload's sha256 travels in the header and is checked at the end.
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { fail } from '../errors.ts';

export const MiB = 1024 * 1024;
const MIN_CHUNK_BYTES = 1 * MiB;
/** Uploads may use smaller chunks (site network.chunk_size >= 64 KiB, for flaky links). */
export const MIN_UPLOAD_CHUNK_BYTES = 64 * 1024;
export const MAX_CHUNK_BYTES = 4 * MiB;
export const DEFAULT_CHUNK_BYTES = 2 * MiB;
/** An update's id (site-chosen, names files at both ends): 1-128 of [A-Za-z0-9._-]. */
export const UPDATE_ID_RE = /^[A-Za-z0-9._-]{1,128}$/;

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
