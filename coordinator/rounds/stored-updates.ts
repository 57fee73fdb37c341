// The round's accepted updates as the strategies see them (UpdateRef): each stored .safetensors
// file is read only when the strategy asks for it, its header checked against the job's update
// layout, and its tensor bytes read straight into a Float32Array in the canonical layout (one
// read when the file holds the tensors in layout order, as sites write them). The content was
// validated (finite, exact layout) when the update was accepted; strategies check NaN/Inf again
// as they go. For streaming (mean-based) strategies one buffer is reused for every update —
// legal because such a strategy never touches an update after its next load()
// (coordinator/strategies/common.ts) — so memory stays O(adapter) whatever the number of sites.
// An update a site trained at a lower rank (UpdateRow.lora_r) is read in its own layout: handed
// to the strategy as such (UpdateRef.layout: svd sums the factors' products), or zero-padded to
// the job's rank (ffa: a frozen A's first k rows times the padded B delta is exactly the site's).
import { open, type FileHandle } from 'node:fs/promises';
import { fail } from '../../shared/errors.ts';
import { parseSafetensorsHeader } from '../../shared/safetensors.ts';
import { layoutAtRank, padToRank } from '../../shared/lora/rank.ts';
import type { AdapterLayout } from '../../shared/tensors.ts';
import type { UpdateRow } from '../store/store.ts';
import type { UpdateRef } from '../strategies/types.ts';
import { checkUpdateHeader } from './validate-update.ts';

/** Smallest range read on its own thread (below it one read is as fast). */
const PARALLEL_READ_BYTES = 4 * 1024 * 1024;

async function readFully(fh: FileHandle, into: Uint8Array, position: number, what: string): Promise<void> {
  let off = 0;
  while (off < into.byteLength) {
    const { bytesRead } = await fh.read(into, off, into.byteLength - off, position + off);
    if (bytesRead === 0) throw fail('FEDLORA_ERR_UPDATE_INVALID', `${what}: file ends after ${position + off} bytes`);
    off += bytesRead;
  }
}

/** Read one stored update into `dst` (layout.total float32 values), on the thread pool. */
export async function readStoredUpdate(u: Pick<UpdateRow, 'update_id' | 'site_id' | 'path'>, layout: AdapterLayout, dst: Float32Array): Promise<Float32Array> {
  const what = `update ${u.update_id} of site ${u.site_id} (${u.path})`;
  const fh = await open(u.path, 'r').catch((e: Error) => { throw fail('FEDLORA_ERR_IO', `${what}: cannot open: ${e.message}`); });
  try {
    const lenBuf = Buffer.alloc(8);
    await readFully(fh, lenBuf, 0, what);
    const n = Number(lenBuf.readBigUInt64LE(0));
    if (n > 100 * 1024 * 1024) throw fail('FEDLORA_ERR_UPDATE_INVALID', `${what}: safetensors header of ${n} bytes`);
    const head = Buffer.alloc(8 + n);
    lenBuf.copy(head);
    await readFully(fh, head.subarray(8), 8, what);
    const header = parseSafetensorsHeader(head, Number.MAX_SAFE_INTEGER, what);
    checkUpdateHeader(header, layout, what);
    const bytes = new Uint8Array(dst.buffer, dst.byteOffset, dst.byteLength);
    // Tensors stored back to back in layout order (as sites write them): one read for all.
    const first = header.entries.get(layout.entries[0]?.name ?? '');
    const inOrder = !!first && layout.entries.every((e) => header.entries.get(e.name)!.offset === first.offset + e.offset * 4);
    if (inOrder) {
      // in a few ranges read side by side: the thread pool's threads copy in parallel
      const part = Math.max(PARALLEL_READ_BYTES, Math.ceil(bytes.byteLength / 4 / 4096) * 4096);
      const reads: Promise<void>[] = [];
      for (let at = 0; at < bytes.byteLength; at += part) reads.push(readFully(fh, bytes.subarray(at, Math.min(bytes.byteLength, at + part)), first.offset + at, what));
      await Promise.all(reads);
    }
    else for (const e of layout.entries) await readFully(fh, bytes.subarray(e.offset * 4, (e.offset + e.length) * 4), header.entries.get(e.name)!.offset, what);
    return dst;
  } finally {
    await fh.close();
  }
}

/** UpdateRefs over the round's accepted rows; `reuseBuffer` only for mean-based strategies.
 *  `siteRanks`: how a lower-rank update reaches the strategy (file comment). */
export function storedUpdateRefs(rows: UpdateRow[], layout: AdapterLayout, o: { reuseBuffer: boolean; siteRanks?: 'layout' | 'pad' }): UpdateRef[] {
  let shared: Float32Array | undefined;
  const buffer = () => (o.reuseBuffer ? (shared ??= new Float32Array(layout.total)) : new Float32Array(layout.total));
  return rows.map((u) => {
    const common = { siteId: u.site_id, numExamples: u.examples, ...(u.clipped === null ? {} : { unclippedBit: u.clipped ? 0 : 1 }) };
    if (!u.lora_r) {
      return { ...common, load: () => readStoredUpdate(u, layout, buffer()), loadInto: (dst: Float32Array) => readStoredUpdate(u, layout, dst) };
    }
    const own = layoutAtRank(layout, u.lora_r);
    if (o.siteRanks === 'layout') return { ...common, layout: own, load: () => readStoredUpdate(u, own, new Float32Array(own.total)) };
    const padded = async (dst: Float32Array) => {
      dst.set(padToRank(await readStoredUpdate(u, own, new Float32Array(own.total)), own, layout));
      return dst;
    };
    return { ...common, load: () => padded(buffer()), loadInto: padded };
  });
}
