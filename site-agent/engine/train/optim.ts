// Optimizers over Float32Arrays with torch.optim semantics, so a step here matches the same
// step of torch.optim.AdamW / torch.optim.SGD (up to float32 rounding: we accumulate in double
// and store float32, torch computes in float32).
//
// AdamW (torch, amsgrad=False):         SGD (torch, dampening=0):
//   p *= 1 - lr*wd                        g += wd*p
//   m = b1*m + (1-b1)*g                   buf = g (first step) | momentum*buf + g
//   v = b2*v + (1-b2)*g^2                 g = nesterov ? g + momentum*buf : buf
//   p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)     p -= lr*g
//
// The state (moments, step count) is plain tensors + a number, so a run checkpoint can store
// it exactly and a resumed run continues bit-identically.

import { fail } from '../../../shared/errors.ts';

export type OptimizerKind = 'adamw' | 'sgd';

export interface OptimizerOptions {
  kind: OptimizerKind;
  weightDecay: number;
  /** AdamW */
  betas?: [number, number];
  eps?: number;
  /** SGD */
  momentum?: number;
  nesterov?: boolean;
}

export interface OptimizerState {
  kind: OptimizerKind;
  step: number;
  /** `${paramKey}::exp_avg`, `${paramKey}::exp_avg_sq`, `${paramKey}::momentum_buffer` */
  tensors: Map<string, Float32Array>;
}

export class Optimizer {
  readonly opts: Required<OptimizerOptions>;
  private t = 0;
  private state = new Map<string, Float32Array>();
  /** params whose SGD momentum buffer exists (torch: state['momentum_buffer'] is not None) */
  private hadMomentum = new Set<string>();

  constructor(opts: OptimizerOptions) {
    // undefined fields fall back to torch's defaults (a plain spread would keep the undefined)
    this.opts = {
      kind: opts.kind, weightDecay: opts.weightDecay,
      betas: opts.betas ?? [0.9, 0.999], eps: opts.eps ?? 1e-8, momentum: opts.momentum ?? 0, nesterov: opts.nesterov ?? false,
    };
    const { kind, weightDecay, betas, eps, momentum } = this.opts;
    if (kind !== 'adamw' && kind !== 'sgd') throw fail('FEDLORA_ERR_CONFIG', `optimizer "${kind}": expected adamw or sgd`);
    if (!(weightDecay >= 0)) throw fail('FEDLORA_ERR_CONFIG', `weightDecay = ${weightDecay}: must be >= 0`);
    if (!(betas[0] >= 0 && betas[0] < 1 && betas[1] >= 0 && betas[1] < 1)) throw fail('FEDLORA_ERR_CONFIG', `betas = [${betas}]: each must be in [0, 1)`);
    if (!(eps > 0)) throw fail('FEDLORA_ERR_CONFIG', `eps = ${eps}: must be > 0`);
    if (!(momentum >= 0 && momentum < 1)) throw fail('FEDLORA_ERR_CONFIG', `momentum = ${momentum}: must be in [0, 1)`);
  }

  get stepCount(): number {
    return this.t;
  }

  /** One update of every param that has a gradient; `lr` is the scheduled rate for this step. */
  step(params: Map<string, Float32Array>, grads: Map<string, Float32Array>, lr: number): void {
    this.t += 1;
    for (const [key, g] of grads) {
      const p = params.get(key);
      if (!p) throw fail('FEDLORA_ERR_TRAINING', `optimizer: gradient for ${key} has no parameter`);
      if (p.length !== g.length) throw fail('FEDLORA_ERR_SHAPE', `optimizer: gradient of ${key} has ${g.length} values, parameter has ${p.length}`);
      if (this.opts.kind === 'adamw') this.adamw(key, p, g, lr);
      else this.sgd(key, p, g, lr);
    }
  }

  private buf(key: string, n: number): Float32Array {
    let b = this.state.get(key);
    if (!b) {
      b = new Float32Array(n);
      this.state.set(key, b);
    }
    return b;
  }

  private adamw(key: string, p: Float32Array, g: Float32Array, lr: number): void {
    const [b1, b2] = this.opts.betas;
    const m = this.buf(`${key}::exp_avg`, p.length);
    const v = this.buf(`${key}::exp_avg_sq`, p.length);
    const decay = 1 - lr * this.opts.weightDecay;
    const bc1 = 1 - Math.pow(b1, this.t);
    const bc2Sqrt = Math.sqrt(1 - Math.pow(b2, this.t));
    const stepSize = lr / bc1;
    const eps = this.opts.eps;
    for (let i = 0; i < p.length; i++) {
      const gi = g[i];
      const mi = (m[i] = b1 * m[i] + (1 - b1) * gi);
      const vi = (v[i] = b2 * v[i] + (1 - b2) * gi * gi);
      // torch rounds every intermediate to float32; doing the same with fround keeps us within ~1 ulp
      p[i] = Math.fround(p[i] * decay) - (stepSize * mi) / (Math.sqrt(vi) / bc2Sqrt + eps);
    }
  }

  private sgd(key: string, p: Float32Array, g: Float32Array, lr: number): void {
    const { weightDecay: wd, momentum, nesterov } = this.opts;
    const buf = momentum > 0 ? this.buf(`${key}::momentum_buffer`, p.length) : null;
    // torch initialises the buffer with the first gradient (no momentum*0 + g rounding)
    const first = buf !== null && !this.hadMomentum.has(key);
    if (buf) this.hadMomentum.add(key);
    for (let i = 0; i < p.length; i++) {
      let d = g[i] + wd * p[i];
      if (buf) {
        const bi = (buf[i] = first ? d : momentum * buf[i] + d);
        d = nesterov ? d + momentum * bi : bi;
      }
      p[i] = p[i] - lr * d;
    }
  }
  exportState(): OptimizerState {
    const tensors = new Map<string, Float32Array>();
    for (const [k, v] of this.state) tensors.set(k, new Float32Array(v));
    return { kind: this.opts.kind, step: this.t, tensors };
  }

  loadState(s: OptimizerState): void {
    if (s.kind !== this.opts.kind) throw fail('FEDLORA_ERR_CONFIG', `optimizer state is for ${s.kind}, this run uses ${this.opts.kind}`);
    this.t = s.step;
    this.state = new Map();
    this.hadMomentum = new Set();
    for (const [k, v] of s.tensors) {
      this.state.set(k, new Float32Array(v));
      if (k.endsWith('::momentum_buffer')) this.hadMomentum.add(k.slice(0, -'::momentum_buffer'.length));
    }
  }
}
