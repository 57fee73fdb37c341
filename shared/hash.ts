// sha256 as the project uses it everywhere (hex digests): of bytes and of files streamed in 8 MiB reads (never a whole file in memory).
import { createHash } from 'node:crypto';
import { closeSync, createReadStream, openSync, readSync } from 'node:fs';

const READ_BYTES = 8 * 1024 * 1024;

export function sha256Hex(data: Uint8Array | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Stream a file (or its first `length` bytes) through sha256 without blocking the event loop. */
export function sha256File(path: string, length?: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    if (length === 0) {
      resolve(h.digest('hex'));
      return;
    }
    const s = createReadStream(path, { highWaterMark: READ_BYTES, ...(length !== undefined ? { start: 0, end: length - 1 } : {}) });
    s.on('data', (b) => h.update(b as Buffer));
    s.on('error', reject);
    s.on('end', () => resolve(h.digest('hex')));
  });
}

/** sha256 of a file read synchronously (for synchronous callers such as the CLI's model manifest). */
export function sha256FileSync(path: string): string {
  const h = createHash('sha256');
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.allocUnsafe(READ_BYTES);
    let pos = 0;
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, pos);
      if (n <= 0) break;
      h.update(buf.subarray(0, n));
      pos += n;
    }
  } finally {
    closeSync(fd);
  }
  return h.digest('hex');
}


/** A number in [0, 1) fixed by `text` (the first 32 bits of its sha256): a reproducible draw. */
export function hashUnit(text: string): number {
  return parseInt(sha256Hex(text).slice(0, 8), 16) / 2 ** 32;
}

/** The `n` ids that come first when ordered by sha256(`${key}:${id}`): a sample fixed by `key`. */
export function hashOrderedSample(ids: readonly string[], n: number, key: string): string[] {
  return ids.map((id) => ({ id, k: sha256Hex(`${key}:${id}`) })).sort((a, b) => (a.k < b.k ? -1 : 1)).slice(0, n).map((x) => x.id);
}
