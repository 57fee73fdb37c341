// UpdateRefs backed by raw little-endian float32 files (the coordinator's spooled updates),
// with read-ahead: while a streaming strategy accumulates update k on the main thread, update
// k+1 is read on libuv's thread pool, so I/O and arithmetic overlap (opt-in: readAhead).
// With `reuseBuffers` (only for streaming strategies: Strategy.meanBased) two buffers are
// recycled — legal because a streaming strategy never touches an update after its next load()
// (coordinator/strategies/common.ts) — so memory stays O(adapter) and no fresh pages fault in.
import { closeSync, openSync, readSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { fail } from '../../shared/errors.ts';
import type { UpdateRef } from './types.ts';

export interface FileUpdate {
  siteId: string;
  numExamples: number;
  path: string;
  /** Byte offset of the float32 data in the file (e.g. after a header); default 0. */
  offset?: number;
  unclippedBit?: number;
}

async function readInto(u: FileUpdate, dst: Float32Array): Promise<Float32Array> {
  const bytes = new Uint8Array(dst.buffer, dst.byteOffset, dst.byteLength);
  const fh = await open(u.path, 'r').catch((e: Error) => { throw fail('FEDLORA_ERR_IO', `update of site ${u.siteId}: cannot open ${u.path}: ${e.message}`); });
  try {
    let off = 0;
    while (off < bytes.length) {
      const { bytesRead } = await fh.read(bytes, off, bytes.length - off, (u.offset ?? 0) + off);
      if (bytesRead === 0) throw fail('FEDLORA_ERR_SHAPE', `update of site ${u.siteId}: ${u.path} holds ${off / 4} float32 values, the adapter layout has ${dst.length}`);
      off += bytesRead;
    }
  } finally {
    await fh.close();
  }
  return dst;
}

function readIntoSync(u: FileUpdate, dst: Float32Array): Float32Array {
  const bytes = new Uint8Array(dst.buffer, dst.byteOffset, dst.byteLength);
  let fd: number;
  try {
    fd = openSync(u.path, 'r');
  } catch (e) {
    throw fail('FEDLORA_ERR_IO', `update of site ${u.siteId}: cannot open ${u.path}: ${(e as Error).message}`);
  }
  try {
    let off = 0;
    while (off < bytes.length) {
      const n = readSync(fd, bytes, off, bytes.length - off, (u.offset ?? 0) + off);
      if (n === 0) throw fail('FEDLORA_ERR_SHAPE', `update of site ${u.siteId}: ${u.path} holds ${off / 4} float32 values, the adapter layout has ${dst.length}`);
      off += n;
    }
  } finally {
    closeSync(fd);
  }
  return dst;
}

/** readAhead overlaps reads with arithmetic on the thread pool; the default (false) reads
 *  synchronously when asked, which measured faster on the 2-core build machine (no idle core
 *  for the thread pool). */
export function fileUpdateRefs(updates: FileUpdate[], elements: number, opts: { reuseBuffers?: boolean; readAhead?: boolean } = {}): UpdateRef[] {
  const reuse = opts.reuseBuffers ?? false;
  const readAhead = opts.readAhead ?? false;
  const pool: Float32Array[] = [];
  const bufferFor = (k: number) => {
    if (!reuse) return new Float32Array(elements);
    const slot = readAhead ? k % 2 : 0; // read-ahead needs a second buffer in flight
    return (pool[slot] ??= new Float32Array(elements));
  };
  const pending = new Map<number, Promise<Float32Array>>();
  const start = (k: number) => {
    if (k < updates.length && !pending.has(k)) {
      const p = readInto(updates[k], bufferFor(k));
      p.catch(() => undefined); // surfaced when load(k) awaits it
      pending.set(k, p);
    }
  };
  return updates.map((u, k) => ({
    siteId: u.siteId,
    numExamples: u.numExamples,
    unclippedBit: u.unclippedBit,
    async load() {
      if (!readAhead) return readIntoSync(u, bufferFor(k));
      start(k);
      const p = pending.get(k)!;
      pending.delete(k);
      const v = await p;
      if (readAhead) start(k + 1);
      return v;
    },
  }));
}
