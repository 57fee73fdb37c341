// Streaming safetensors writer: the header first (every shape and dtype is known up front), then
// each tensor's bytes produced in chunks by a callback and written with positional writes of at
// most WRITE_CHUNK bytes. fs.writeSync takes at most 2 GiB per call (the RangeError of writing one
// >2 GiB buffer), and a checkpoint is written without ever holding more than one chunk in memory.
// Sharding follows Hugging Face's save_pretrained: tensors in state-dict order, a new shard when
// the next tensor would push the current one past max_shard_size (5 GB by default, decimal like
// huggingface_hub), files model-0000i-of-0000N.safetensors plus model.safetensors.index.json.

import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { fail } from './errors.ts';
import { DTYPE_BYTES, type SafetensorsDtype } from './safetensors-dtypes.ts';

/** Largest single write (well under fs.writeSync's 2 GiB limit). */
const WRITE_CHUNK = 64 * 1024 * 1024;

export interface TensorSpec {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
}

/** Produces one tensor's bytes (in order, any chunk sizes) through `write`. */
export type TensorSource = (spec: TensorSpec, write: (bytes: Uint8Array) => void) => void;

export const tensorByteLength = (t: Pick<TensorSpec, 'dtype' | 'shape'>): number => t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[t.dtype];

/** The header bytes (8-byte length + JSON padded with spaces to 8 bytes, like the Rust crate) and
 *  the order in which tensor bytes follow it (sorted by name). */
export function safetensorsLayout(specs: TensorSpec[], metadata?: Record<string, string>): { header: Buffer; order: TensorSpec[]; dataBytes: number } {
  const order = [...specs].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const json: Record<string, unknown> = {};
  if (metadata) json.__metadata__ = metadata;
  let offset = 0;
  for (let i = 0; i < order.length; i++) {
    const t = order[i];
    if (i > 0 && order[i - 1].name === t.name) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `safetensors: tensor "${t.name}" given twice`);
    const n = tensorByteLength(t);
    json[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + n] };
    offset += n;
  }
  let text = Buffer.from(JSON.stringify(json), 'utf8');
  const pad = (8 - (text.length % 8)) % 8;
  if (pad) text = Buffer.concat([text, Buffer.alloc(pad, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(text.length));
  return { header: Buffer.concat([len, text]), order, dataBytes: offset };
}

/** Write bytes at `pos` in pieces of at most `chunk` bytes; returns the new position. */
export function writeAllAt(fd: number, bytes: Uint8Array, pos: number, chunk = WRITE_CHUNK): number {
  let done = 0;
  while (done < bytes.byteLength) {
    const n = writeSync(fd, bytes, done, Math.min(chunk, bytes.byteLength - done), pos + done);
    done += n;
  }
  return pos + done;
}

function ioError(file: string, e: unknown): Error {
  if ((e as { code?: string }).code === 'ENOSPC') return fail('FEDLORA_ERR_DISK_FULL', `${file}: no space left on the device`);
  if ((e as { name?: string }).name === 'FedloraError') return e as Error;
  return fail('FEDLORA_ERR_IO', `${file}: cannot write (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
}

/** Write one safetensors file atomically (temp file + fsync + rename), tensor bytes from `source`. */
export function writeSafetensorsStream(file: string, specs: TensorSpec[], source: TensorSource, metadata?: Record<string, string>): { bytes: number } {
  const { header, order } = safetensorsLayout(specs, metadata);
  const tmp = `${file}.tmp-${process.pid}`;
  let fd: number | null = null;
  try {
    fd = openSync(tmp, 'w');
    let pos = writeAllAt(fd, header, 0);
    for (const t of order) {
      const want = tensorByteLength(t);
      const start = pos;
      const f = fd;
      source(t, (bytes) => {
        if (pos + bytes.byteLength - start > want) throw fail('FEDLORA_ERR_SHAPE', `${file}: tensor "${t.name}" got more than its ${want} bytes`);
        pos = writeAllAt(f, bytes, pos);
      });
      if (pos - start !== want) throw fail('FEDLORA_ERR_SHAPE', `${file}: tensor "${t.name}" got ${pos - start} bytes, expected ${want} for [${t.shape}] ${t.dtype}`);
    }
    fsyncSync(fd);
    closeSync(fd);
    fd = null;
    renameSync(tmp, file);
    return { bytes: pos };
  } catch (e) {
    if (fd !== null) closeSync(fd);
    rmSync(tmp, { force: true });
    throw ioError(file, e);
  }
}

export interface ShardedWriteResult {
  /** Weight files written, in order (one "model.safetensors" when everything fits one shard). */
  files: string[];
  /** Sum of all tensor bytes (the index's metadata.total_size). */
  totalSize: number;
}

/** Group tensors (in the given state-dict order) into shards the way save_pretrained does. */
export function planShards(specs: TensorSpec[], maxShardBytes: number): TensorSpec[][] {
  if (!(maxShardBytes > 0)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `max shard size ${maxShardBytes} must be > 0`);
  const shards: TensorSpec[][] = [];
  let cur: TensorSpec[] = [];
  let size = 0;
  for (const t of specs) {
    const n = tensorByteLength(t);
    if (cur.length > 0 && size + n > maxShardBytes) {
      shards.push(cur);
      cur = [];
      size = 0;
    }
    cur.push(t);
    size += n;
  }
  if (cur.length) shards.push(cur);
  return shards;
}

/** A checkpoint's weights as Hugging Face shards (+ index) or one model.safetensors. */
export function writeShardedSafetensors(
  dir: string, specs: TensorSpec[], source: TensorSource, opts: { maxShardBytes?: number; metadata?: Record<string, string> } = {},
): ShardedWriteResult {
  const shards = planShards(specs, opts.maxShardBytes ?? 5e9);
  const totalSize = specs.reduce((s, t) => s + tensorByteLength(t), 0);
  const metadata = opts.metadata ?? { format: 'pt' };
  if (shards.length <= 1) {
    writeSafetensorsStream(join(dir, 'model.safetensors'), specs, source, metadata);
    return { files: ['model.safetensors'], totalSize };
  }
  const pad = (i: number) => String(i).padStart(5, '0');
  const weightMap: Record<string, string> = {};
  const files: string[] = [];
  shards.forEach((group, i) => {
    const name = `model-${pad(i + 1)}-of-${pad(shards.length)}.safetensors`;
    writeSafetensorsStream(join(dir, name), group, source, metadata);
    for (const t of group) weightMap[t.name] = name;
    files.push(name);
  });
  const sorted = Object.fromEntries(Object.entries(weightMap).sort(([a], [b]) => (a < b ? -1 : 1)));
  const index = join(dir, 'model.safetensors.index.json');
  try {
    writeFileSync(`${index}.tmp-${process.pid}`, JSON.stringify({ metadata: { total_size: totalSize }, weight_map: sorted }, null, 2));
    renameSync(`${index}.tmp-${process.pid}`, index);
  } catch (e) {
    throw ioError(index, e);
  }
  return { files: [...files, 'model.safetensors.index.json'], totalSize };
}
