// Checkpoint of a training run: adapter, optimizer moments, the FedProx anchor, and a JSON state
// (step, data position, metrics so far, a fingerprint of everything that must not change between
// the interrupted run and its resume). Tensor files are written first (each atomically), the state
// file last and it records their sha256, so a crash mid-checkpoint leaves the previous state
// pointing at files that no longer match -> a clear error, never a silently mixed resume.

import { sha256Hex } from '../../../shared/hash.ts';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fail } from '../../../shared/errors.ts';
import { decodeSafetensorsF32, writeSafetensors, type TensorToWrite } from '../../../shared/safetensors.ts';
import type { AdapterWeights } from '../../../shared/lora/types.ts';
import type { OptimizerState } from './optim.ts';

const RUN_STATE_FILE = 'run_state.json';

export interface DataPosition {
  epoch: number;
  /** index of the next micro-batch within the epoch's packed batches */
  index: number;
  /** micro-batches consumed since the start of the run (dropout seeds derive from it) */
  micro: number;
}

export interface RunState {
  version: 1;
  fingerprint: string;
  step: number;
  totalSteps: number;
  position: DataPosition;
  lossPerStep: number[];
  gradNormPerStep: number[];
  tokens: number;
  trainSeconds: number;
  optimizer: { kind: OptimizerState['kind']; step: number };
  files: Record<string, string>; // file name -> sha256
}

function toWrite(m: Map<string, { shape: number[]; data: Float32Array }>): Map<string, TensorToWrite> {
  const out = new Map<string, TensorToWrite>();
  for (const [k, t] of m) out.set(k, { dtype: 'F32', shape: t.shape, data: t.data });
  return out;
}

function writeTensors(dir: string, name: string, m: Map<string, { shape: number[]; data: Float32Array }>, files: Record<string, string>): void {
  const file = join(dir, name);
  writeSafetensors(file, toWrite(m));
  files[name] = sha256Hex(readFileSync(file));
}

export function saveRunCheckpoint(
  dir: string,
  state: Omit<RunState, 'files' | 'version'>,
  adapter: AdapterWeights,
  opt: OptimizerState,
  anchor: AdapterWeights | null,
): void {
  try {
    mkdirSync(dir, { recursive: true });
  } catch (e) {
    throw fail('FEDLORA_ERR_IO', `${dir}: cannot create the checkpoint folder (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  const files: Record<string, string> = {};
  const optTensors = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [k, v] of opt.tensors) optTensors.set(k, { shape: [v.length], data: v });
  try {
    writeTensors(dir, 'adapter.safetensors', adapter, files);
    writeTensors(dir, 'optimizer.safetensors', optTensors, files);
    if (anchor) writeTensors(dir, 'anchor.safetensors', anchor, files);
    const full: RunState = { version: 1, ...state, files };
    const tmp = join(dir, `${RUN_STATE_FILE}.tmp-${process.pid}`);
    writeFileSync(tmp, JSON.stringify(full, null, 1));
    renameSync(tmp, join(dir, RUN_STATE_FILE));
  } catch (e) {
    if ((e as { code?: string }).code === 'ENOSPC') throw fail('FEDLORA_ERR_DISK_FULL', `${dir}: no space left while writing the training checkpoint`);
    if ((e as { name?: string }).name === 'FedloraError') throw e;
    throw fail('FEDLORA_ERR_IO', `${dir}: cannot write the training checkpoint (${(e as Error).message})`);
  }
}

export function hasRunCheckpoint(dir: string): boolean {
  return existsSync(join(dir, RUN_STATE_FILE));
}

export interface LoadedRun {
  state: RunState;
  adapter: AdapterWeights;
  optimizer: OptimizerState;
  anchor: AdapterWeights | null;
}

export function loadRunCheckpoint(dir: string): LoadedRun {
  const statePath = join(dir, RUN_STATE_FILE);
  let state: RunState;
  try {
    state = JSON.parse(readFileSync(statePath, 'utf8')) as RunState;
  } catch (e) {
    throw fail('FEDLORA_ERR_IO', `${statePath}: cannot read the training checkpoint state (${(e as Error).message})`);
  }
  if (state.version !== 1 || typeof state.step !== 'number' || !state.files) throw fail('FEDLORA_ERR_CONFIG', `${statePath}: not a fedlora training checkpoint (version ${String(state.version)})`);
  const read = (name: string) => {
    const file = join(dir, name);
    if (!existsSync(file)) throw fail('FEDLORA_ERR_IO', `${file}: missing (named in ${RUN_STATE_FILE})`);
    const buf = readFileSync(file);
    if (sha256Hex(buf) !== state.files[name]) throw fail('FEDLORA_ERR_IO', `${file}: sha256 differs from ${RUN_STATE_FILE} (checkpoint was interrupted while being written)`);
    return decodeSafetensorsF32(buf, file).tensors;
  };
  const adapter: AdapterWeights = new Map();
  for (const [k, t] of read('adapter.safetensors')) adapter.set(k, { shape: t.shape, data: t.data });
  const tensors = new Map<string, Float32Array>();
  for (const [k, t] of read('optimizer.safetensors')) tensors.set(k, t.data);
  let anchor: AdapterWeights | null = null;
  if (state.files['anchor.safetensors']) {
    anchor = new Map();
    for (const [k, t] of read('anchor.safetensors')) anchor.set(k, { shape: t.shape, data: t.data });
  }
  return { state, adapter, optimizer: { kind: state.optimizer.kind, step: state.optimizer.step, tensors }, anchor };
}
