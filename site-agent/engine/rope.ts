// Rotary position embeddings exactly as transformers computes them (modeling_rope_utils.py):
// inv_freq in float32 (default, 'linear' and 'llama3' rope types), then cos/sin of
// position * inv_freq, duplicated over both halves of the head (rotate-half convention).
// Math.fround after each step mirrors torch's float32 arithmetic.

import type { ModelConfig } from '../../shared/lora/types.ts';

const f = Math.fround;

/** inv_freq[i] = 1 / theta^(2i/dim), float32, with the config's rope scaling applied. */
function computeInvFreq(cfg: Pick<ModelConfig, 'headDim' | 'ropeTheta' | 'ropeScaling'>): Float32Array {
  const dim = cfg.headDim;
  const half = dim / 2;
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) inv[i] = f(1 / f(Math.pow(cfg.ropeTheta, f(f(2 * i) / dim))));
  const s = cfg.ropeScaling;
  if (!s) return inv;
  if (s.type === 'linear') {
    // _compute_linear_scaling_rope_parameters: inv_freq /= factor
    for (let i = 0; i < half; i++) inv[i] = f(inv[i] / s.factor);
    return inv;
  }
  // _compute_llama3_parameters
  const lowFreqWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
  const highFreqWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
  const out = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    const wavelen = f((2 * Math.PI) / inv[i]);
    let v = wavelen > lowFreqWavelen ? f(inv[i] / s.factor) : inv[i];
    const smooth = f(f(f(s.originalMaxPositionEmbeddings / wavelen) - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor));
    const smoothed = f(f(f(f(1 - smooth) * v) / s.factor) + f(smooth * v));
    const isMedium = !(wavelen < highFreqWavelen) && !(wavelen > lowFreqWavelen);
    if (isMedium) v = smoothed;
    out[i] = v;
  }
  return out;
}

/** cos/sin tables [positions, headDim] (emb = cat(freqs, freqs)), float32. */
export function ropeTables(cfg: Pick<ModelConfig, 'headDim' | 'ropeTheta' | 'ropeScaling'>, positions: number): { cos: Float32Array; sin: Float32Array } {
  const dim = cfg.headDim;
  const half = dim / 2;
  const inv = computeInvFreq(cfg);
  const cos = new Float32Array(positions * dim);
  const sin = new Float32Array(positions * dim);
  for (let p = 0; p < positions; p++) {
    for (let i = 0; i < half; i++) {
      const fr = f(p * inv[i]);
      const c = f(Math.cos(fr)), s = f(Math.sin(fr));
      cos[p * dim + i] = c; cos[p * dim + half + i] = c;
      sin[p * dim + i] = s; sin[p * dim + half + i] = s;
    }
  }
  return { cos, sin };
}
