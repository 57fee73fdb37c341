// ONNX Runtime sessions for the engine's graphs: writing the .onnx (cached by a hash of everything
// that defines it), execution providers, and the training-step session of types.ts.
//
// External data: ORT 1.30 refuses absolute external-data paths and any path that resolves (after
// following symlinks) outside the model's folder. So the .onnx goes to a cache folder holding hard
// links to the safetensors files (same file system: no copy); if hard links fail (another file
// system), the .onnx is written next to the weights in the checkpoint folder.

import * as ort from 'onnxruntime-node';
import { createHash } from 'node:crypto';
import { existsSync, linkSync, mkdirSync, renameSync, writeFileSync, statSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join, relative, isAbsolute } from 'node:path';
import { fail } from '../../shared/errors.ts';
import { ORT_CUDA_INSTALL_COMMAND } from '../../shared/onnxruntime-install.ts';
import type { Graph } from './graph/ir.ts';
import { encodeModel } from './graph/onnx-export.ts';
import { appendBackward } from './graph/autodiff.ts';
import { buildDecoder, type DecoderSpec, type DistillHeadSpec } from './model.ts';
import { prepareBaseWeights, weightCacheRoot, type BaseWeights } from './quant/weight-cache.ts';
import type { AdapterWeights, LoraConfig } from '../../shared/lora/types.ts';
import type { Checkpoint, Device, PackedBatch, QuantMode, StepResult, TrainStepSession } from './types.ts';
import { mulberry32 } from '../../shared/prng.ts';

/** Bump when the graph construction changes, so cached .onnx files are rebuilt. */
export const GRAPH_VERSION = 'g2';

export interface SessionOptions {
  device?: Device;
  /** Intra-op threads; default: all cores. */
  threads?: number;
  /** Folder for built .onnx files; default $FEDLORA_GRAPH_CACHE or <tmpdir>/fedlora-graphs. */
  cacheDir?: string;
  /** Frozen base weights in float32 (default) or blockwise int8/int4. */
  quantize?: QuantMode;
  /** MatMulNBits accuracy level (4: fast, 0: exact float arithmetic); default 4. */
  quantAccuracy?: 0 | 4;
  /** Progress notes (e.g. "preparing int4 weights ..."). */
  log?: (msg: string) => void;
}

const preparedWeights = new Map<string, BaseWeights>();

/** The base weights for `opts.quantize`, preparing their on-disk cache on first use. */
export function baseWeightsFor(ckpt: Checkpoint, opts: SessionOptions = {}): BaseWeights {
  const mode = opts.quantize ?? 'none';
  const root = weightCacheRoot(graphCacheDir(opts));
  const k = `${ckpt.dir}\0${ckpt.manifestSha256}\0${mode}\0${root}`;
  let w = preparedWeights.get(k);
  if (!w) {
    w = prepareBaseWeights(ckpt, mode, root, opts.log, graphCacheDir(opts));
    preparedWeights.set(k, w);
  }
  return w;
}

export function graphCacheDir(opts: SessionOptions = {}): string {
  return opts.cacheDir ?? process.env.FEDLORA_GRAPH_CACHE ?? join(tmpdir(), 'fedlora-graphs');
}

/** Hash of everything that defines a graph: code version, checkpoint identity, weight locations, spec. */
export function graphKey(ckpt: Checkpoint, spec: unknown): string {
  const h = createHash('sha256');
  h.update(GRAPH_VERSION).update('\0').update(ckpt.manifestSha256).update('\0').update(JSON.stringify(ckpt.config));
  for (const [name, t] of [...ckpt.tensors].sort(([a], [c]) => (a < c ? -1 : 1))) {
    h.update(`\0${name}:${t.dtype}:${t.shape}:${t.file}:${t.offset}:${t.length}`);
  }
  h.update('\0').update(JSON.stringify(spec));
  return h.digest('hex').slice(0, 32);
}

/** Write (or reuse) the .onnx of `build()` for `key`; returns its path. */
export function materializeModel(ckpt: Checkpoint, key: string, build: () => Graph, opts: SessionOptions = {}): string {
  const cacheRoot = graphCacheDir(opts);
  const dir = join(cacheRoot, key);
  const modelPath = join(dir, 'model.onnx');
  if (existsSync(modelPath)) return modelPath;
  const nextToCkpt = join(ckpt.dir, `.fedlora-graph-${key}.onnx`);
  if (existsSync(nextToCkpt)) return nextToCkpt;

  const g = build();
  const files = [...new Set(g.initializers.flatMap((i) => (i.data.kind === 'external' ? [i.data.file] : [])))];
  mkdirSync(dir, { recursive: true });
  const links = new Map<string, string>();
  let linked = true;
  for (const [i, file] of files.entries()) {
    const link = join(dir, `w${i}.safetensors`);
    try {
      if (!existsSync(link)) linkSync(file, link);
      else if (statSync(link).ino !== statSync(file).ino) throw new Error('stale link');
      links.set(file, `w${i}.safetensors`);
    } catch {
      linked = false;
      break;
    }
  }
  if (linked) {
    writeAtomic(modelPath, encodeModel(g, (f) => links.get(f)!));
    return modelPath;
  }
  // Fallback: next to the weights (the checkpoint folder must then be writable).
  const rel = (f: string) => {
    const r = relative(dirname(nextToCkpt), f);
    if (r.startsWith('..') || isAbsolute(r)) throw fail('FEDLORA_ERR_MODEL_FILES', `weight file ${f} is outside the checkpoint folder ${ckpt.dir}; ONNX Runtime cannot load it as external data`);
    return r;
  };
  try {
    writeAtomic(nextToCkpt, encodeModel(g, rel));
  } catch (e) {
    if ((e as { code?: string }).code?.startsWith?.('FEDLORA')) throw e;
    throw fail('FEDLORA_ERR_IO', `cannot hard-link the weights into ${dir} nor write ${nextToCkpt} (${(e as Error).message}); set FEDLORA_GRAPH_CACHE to a folder on the same file system as ${ckpt.dir}`);
  }
  return nextToCkpt;
}

function writeAtomic(path: string, bytes: Uint8Array): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, bytes);
  renameSync(tmp, path);
}

/** How a session holds memory. `prepack`: kernels repack constant weights into their own layout at
 *  load; quantized graphs need it (MatMulNBits' fast path, after which ORT frees the original),
 *  float32 graphs turn it off, since a weight used by a forward and a backward Gemm would get two
 *  packed float32 copies. `arena`: ORT's CPU arena keeps freed buffers for reuse; training turns it
 *  off, so a step's activations go back to the system when it ends. ORT's memory pattern (one block
 *  planned after the first run, beside the arena's) is always off: it doubled peak memory. */
export interface SessionMemory {
  prepack: boolean;
  arena: boolean;
}

/** An ORT session on the chosen execution provider, with a clear error when it is not available. */
export async function createOrtSession(modelPath: string, opts: SessionOptions = {}, memory: SessionMemory = { prepack: true, arena: true }): Promise<ort.InferenceSession> {
  const device = opts.device ?? 'cpu';
  const listed = ort.listSupportedBackends().map((b) => b.name);
  const hint = device === 'cuda'
    ? ` Install the CUDA provider with \`${ORT_CUDA_INSTALL_COMMAND}\` in the fedlora folder (needs CUDA 12 and cuDNN 9).`
    : device === 'webgpu' ? ' WebGPU needs a GPU with Vulkan/D3D12/Metal drivers.' : '';
  if (!listed.includes(device)) {
    throw fail('FEDLORA_ERR_EXECUTION_PROVIDER', `execution provider "${device}" is not in this onnxruntime-node build (available: ${listed.join(', ')}).${hint}`);
  }
  const options: ort.InferenceSession.SessionOptions = {
    executionProviders: [device],
    graphOptimizationLevel: 'all',
    intraOpNumThreads: opts.threads ?? availableParallelism(),
    interOpNumThreads: 1,
    executionMode: 'sequential',
    enableMemPattern: false,
    enableCpuMemArena: memory.arena,
    ...(memory.prepack ? {} : { extra: { session: { disable_prepacking: '1' } } }),
  };
  try {
    return await ort.InferenceSession.create(modelPath, options);
  } catch (e) {
    const msg = (e as Error).message;
    if (device !== 'cpu') throw fail('FEDLORA_ERR_EXECUTION_PROVIDER', `cannot start execution provider "${device}": ${msg}.${hint}`);
    throw fail('FEDLORA_ERR_INTERNAL', `ONNX Runtime rejected ${modelPath}: ${msg}`);
  }
}

// ---- feeds shared by training and inference ---------------------------------------------------------

/** Additive attention bias [B, 1, 1, S, P+S] from segment ids: a query sees keys of its own segment at
 *  or before it; padding (segment 0) sees only itself so that softmax stays finite. */
export function attentionBias(batch: number, seq: number, segmentIds: Int32Array): Float32Array {
  const out = new Float32Array(batch * seq * seq).fill(-1e9);
  for (let r = 0; r < batch; r++) {
    for (let i = 0; i < seq; i++) {
      const si = segmentIds[r * seq + i];
      const row = (r * seq + i) * seq;
      if (si === 0) { out[row + i] = 0; continue; }
      for (let j = 0; j <= i; j++) if (segmentIds[r * seq + j] === si) out[row + j] = 0;
    }
  }
  return out;
}

/** Deterministic uniform [0,1) stream (mulberry32) keyed by (seed, name). */
export function seededUniform(seed: number, name: string): () => number {
  const d = createHash('sha256').update(`${seed}\0${name}`).digest();
  return mulberry32(d.readUInt32LE(0));
}

/** Inverted-dropout mask: 0 with probability p, else 1/(1-p); a pure function of (seed, name). */
export function dropoutMask(seed: number, name: string, n: number, p: number): Float32Array {
  const rnd = seededUniform(seed, name);
  const keep = 1 / (1 - p);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = rnd() < p ? 0 : keep;
  return out;
}

export function adapterFeeds(keys: string[], shapes: Map<string, number[]>, params: AdapterWeights): Record<string, ort.Tensor> {
  const feeds: Record<string, ort.Tensor> = {};
  for (const key of keys) {
    const want = shapes.get(key)!;
    const t = params.get(key);
    if (!t) throw fail('FEDLORA_ERR_ADAPTER', `adapter tensor "${key}" is missing`);
    const n = want.reduce((a, c) => a * c, 1);
    if (t.data.length !== n || t.shape.length !== want.length || t.shape.some((d, i) => d !== want[i])) {
      throw fail('FEDLORA_ERR_SHAPE', `adapter tensor "${key}" is [${t.shape}] with ${t.data.length} values, expected [${want}]`);
    }
    feeds[key] = new ort.Tensor('float32', t.data, want);
  }
  return feeds;
}

// ---- training step ------------------------------------------------------------------------------------

export interface TrainStepOptions extends SessionOptions {
  batch: number;
  seq: number;
  /** Recompute each decoder layer's activations in the backward pass (less memory, ~1/3 more compute). */
  recompute?: boolean;
  /** Train on the distillation head (model.ts 'distill'): the teacher's stored top-k for each packed
   *  batch comes from `teacherRows`; results then carry their ce and kl parts. */
  distill?: { head: DistillHeadSpec; teacherRows: (pb: PackedBatch) => TeacherBatch };
}

/** The teacher's stored distribution at every position of a packed batch (zeros where no target). */
export interface TeacherBatch {
  ids: BigInt64Array; // [N, k]
  logp: Float32Array; // [N, k]
  rest: Float32Array; // [N]
}

/** Build (or reuse) the forward+backward graph for (checkpoint, LoRA config, batch shape) and open it. */
export async function createTrainStepSession(ckpt: Checkpoint, lora: LoraConfig, opts: TrainStepOptions): Promise<TrainStepSession> {
  const { batch, seq } = opts;
  if (!Number.isInteger(batch) || batch < 1 || !Number.isInteger(seq) || seq < 2) {
    throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `createTrainStepSession: batch ${batch} and seq ${seq} must be integers >= 1 and >= 2`);
  }
  if (!(lora.dropout >= 0 && lora.dropout < 1)) throw fail('FEDLORA_ERR_CONFIG', `lora.dropout ${lora.dropout} must be in [0, 1)`);
  if (lora.targets.length === 0) throw fail('FEDLORA_ERR_CONFIG', 'lora.targets is empty');
  const spec: DecoderSpec = {
    batch, seq, pastLen: 0, maxPositions: seq, lora, loraDropout: lora.dropout > 0, head: opts.distill ? 'distill' : 'loss', presentKv: false, quantAccuracy: opts.quantAccuracy,
    ...(opts.recompute ? { recompute: true } : {}),
    ...(opts.distill ? { distill: opts.distill.head } : {}),
  };
  const weights = baseWeightsFor(ckpt, opts);
  let built: ReturnType<typeof buildTrainGraph> | null = null;
  const build = () => (built ??= buildTrainGraph(ckpt, spec, weights));
  const key = graphKey(ckpt, { kind: 'train', spec, weights: weights.key });
  const modelPath = materializeModel(ckpt, key, () => build().graph, opts);
  const meta = build(); // cheap relative to a step; gives names and shapes
  const session = await createOrtSession(modelPath, opts, { prepack: weights.mode !== 'none', arena: false });
  const N = batch * seq;

  return {
    batch,
    seq,
    async run(pb: PackedBatch, params: AdapterWeights, o: { lossDenominator: number; dropoutSeed: number }): Promise<StepResult> {
      if (pb.batch !== batch || pb.seq !== seq) {
        throw fail('FEDLORA_ERR_SHAPE', `packed batch is [${pb.batch}, ${pb.seq}] but the training session was built for [${batch}, ${seq}]`);
      }
      if (!(o.lossDenominator > 0)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `lossDenominator ${o.lossDenominator} must be > 0`);
      for (const [name, arr] of [['inputIds', pb.inputIds], ['positionIds', pb.positionIds], ['segmentIds', pb.segmentIds], ['targets', pb.targets]] as const) {
        if (arr.length !== N) throw fail('FEDLORA_ERR_SHAPE', `packed batch ${name} has ${arr.length} values, expected ${N}`);
      }
      for (let i = 0; i < N; i++) {
        const p = pb.positionIds[i];
        if (p < 0n || p >= BigInt(seq)) throw fail('FEDLORA_ERR_SHAPE', `packed batch positionIds[${i}] = ${p} is outside [0, ${seq})`);
      }
      const targets = new BigInt64Array(N);
      const weights = new Float32Array(N);
      const w = 1 / o.lossDenominator;
      for (let i = 0; i < N; i++) {
        const t = pb.targets[i];
        if (t !== -100n) { targets[i] = t; weights[i] = w; }
      }
      const feeds: Record<string, ort.Tensor> = {
        input_ids: new ort.Tensor('int64', pb.inputIds, [batch, seq]),
        position_ids: new ort.Tensor('int64', pb.positionIds, [batch, seq]),
        attn_bias: new ort.Tensor('float32', attentionBias(batch, seq, pb.segmentIds), [batch, 1, 1, seq, seq]),
        targets: new ort.Tensor('int64', targets, [N, 1]),
        loss_weight: new ort.Tensor('float32', weights, [N, 1]),
        ...adapterFeeds(meta.loraKeys, meta.shapes, params),
      };
      if (opts.distill) {
        const t = opts.distill.teacherRows(pb), k = opts.distill.head.topK;
        if (t.ids.length !== N * k || t.logp.length !== N * k || t.rest.length !== N) throw fail('FEDLORA_ERR_SHAPE', `teacher rows hold ${t.ids.length} ids, ${t.logp.length} log-probs, ${t.rest.length} rests; expected ${N}×${k}`);
        feeds.teacher_ids = new ort.Tensor('int64', t.ids, [N, k]);
        feeds.teacher_logp = new ort.Tensor('float32', t.logp, [N, k]);
        feeds.teacher_rest = new ort.Tensor('float32', t.rest, [N, 1]);
      }
      for (const [name, shape] of meta.dropoutInputs) {
        feeds[name] = new ort.Tensor('float32', dropoutMask(o.dropoutSeed, name, shape[0] * shape[1], lora.dropout), shape);
      }
      const out = await session.run(feeds);
      const grads = new Map<string, Float32Array>();
      for (const k of meta.trainable) grads.set(k, out[`grad.${k}`].data as Float32Array);
      const loss = (out.loss.data as Float32Array)[0];
      if (!opts.distill) return { loss, grads };
      return { loss, grads, parts: { ce: (out.ce.data as Float32Array)[0], kl: (out.kl.data as Float32Array)[0] } };
    },
    async release() {
      await session.release();
    },
  };
}

/** The training graph: forward with LoRA + loss, then backward for A and B (only B with freezeA). */
export function buildTrainGraph(ckpt: Checkpoint, spec: DecoderSpec, weights?: BaseWeights) {
  const { b, out, loraKeys, segments } = buildDecoder(ckpt, spec, weights);
  const trainable = loraKeys.filter((k) => !(spec.lora!.freezeA && k.includes('.lora_A.')));
  const grads = appendBackward(b, out, trainable, spec.recompute ? segments : []);
  for (const k of trainable) {
    b.op1('Identity', [grads.get(k)!], {}, `grad.${k}`);
    b.output(`grad.${k}`);
  }
  const shapes = new Map(loraKeys.map((k) => [k, b.shape(k)]));
  const dropoutInputs = b.g.inputs.filter((v) => v.name.startsWith('dropout.')).map((v) => [v.name, v.shape] as [string, number[]]);
  return { graph: b.g, loraKeys, trainable, shapes, dropoutInputs };
}
