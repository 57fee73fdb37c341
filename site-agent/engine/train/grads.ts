// Gradient utilities of one optimizer step: accumulation over micro-batches, the FedProx
// proximal term, and global-norm clipping (torch.nn.utils.clip_grad_norm_ semantics).

import { l2norm } from '../../../shared/tensors.ts';

/** acc[k] += g[k] for every key (allocating acc[k] on first sight). */
export function accumulate(acc: Map<string, Float32Array>, grads: Map<string, Float32Array>, keys: Iterable<string>): void {
  for (const k of keys) {
    const g = grads.get(k);
    if (!g) continue;
    const a = acc.get(k);
    if (!a) acc.set(k, new Float32Array(g));
    else for (let i = 0; i < a.length; i++) a[i] += g[i];
  }
}

/** FedProx: the gradient of mu/2·||w − w_global||² is mu·(w − w_global); added in place. */
export function addProximal(grads: Map<string, Float32Array>, params: Map<string, Float32Array>, global: Map<string, Float32Array>, mu: number): void {
  if (!(mu > 0)) return;
  for (const [k, g] of grads) {
    const w = params.get(k)!;
    const w0 = global.get(k);
    if (!w0) continue;
    for (let i = 0; i < g.length; i++) g[i] += mu * (w[i] - w0[i]);
  }
}

/** Scale grads so their global norm is at most maxNorm (coef = maxNorm/(norm+1e-6), as torch).
 *  Returns the norm before clipping. maxNorm <= 0 or non-finite disables clipping. */
export function clipGradNorm(grads: Map<string, Float32Array>, maxNorm: number): number {
  const norm = l2norm(grads.values()); // global norm over all gradient tensors
  if (!(maxNorm > 0) || !Number.isFinite(maxNorm)) return norm;
  const coef = maxNorm / (norm + 1e-6);
  if (coef < 1) for (const g of grads.values()) for (let i = 0; i < g.length; i++) g[i] *= coef;
  return norm;
}
