// What leaves the site after local training: never records, only adapter numbers.
//   delta   = local adapter - global adapter (FedAvg family, DP clipping applies to it)
//   weights = the local adapter itself (strategies that re-compress factors, e.g. svd)
// With a frozen A (ffa) only the lora_B tensors are sent: A is identical at every site.

import type { AdapterWeights } from '../../shared/lora/types.ts';
import { encodeSafetensors } from '../../shared/safetensors.ts';
import { fail } from '../../shared/errors.ts';

export type PayloadKind = 'delta' | 'weights';

export function buildUpdateTensors(global: AdapterWeights, local: AdapterWeights, kind: PayloadKind, onlyB: boolean): AdapterWeights {
  const out: AdapterWeights = new Map();
  for (const [name, g] of global) {
    if (onlyB && !name.includes('.lora_B.')) continue;
    const l = local.get(name);
    if (!l) throw fail('FEDLORA_ERR_TRAINING', `local adapter lacks tensor ${name} that the global adapter has`);
    if (l.data.length !== g.data.length) throw fail('FEDLORA_ERR_SHAPE', `${name}: local [${l.shape}] vs global [${g.shape}]`);
    const data = new Float32Array(l.data.length);
    if (kind === 'delta') for (let i = 0; i < data.length; i++) data[i] = l.data[i] - g.data[i];
    else data.set(l.data);
    out.set(name, { shape: [...g.shape], data });
  }
  return out;
}

export function assertFinite(t: AdapterWeights, what: string): void {
  for (const [name, { data }] of t) {
    for (let i = 0; i < data.length; i++) {
      if (!Number.isFinite(data[i])) throw fail('FEDLORA_ERR_UPDATE_NONFINITE', `${what}: ${name}[${i}] is ${data[i]}; training diverged, nothing was sent`);
    }
  }
}

export function encodeUpdate(t: AdapterWeights, metadata: Record<string, string>): Buffer {
  const m = new Map<string, { dtype: 'F32'; shape: number[]; data: Float32Array }>();
  for (const [k, v] of t) m.set(k, { dtype: 'F32', shape: v.shape, data: v.data });
  return encodeSafetensors(m, metadata);
}
