// Blockwise weight quantization in the layout of ONNX Runtime's com.microsoft MatMulNBits and
// GatherBlockQuantized (uint8 data): a weight W [rows, cols] (HF Linear layout [out, in]) is cut
// along cols into blocks of `block` values, each block with one float32 scale. Symmetric, no zero
// points (trained LLM weights are centred on zero, and a zero point per block would cost as much
// as a second scale): the kernels' implied zero point is 2^(bits-1), so a value q in [-8, 7] (4 bits)
// or [-127, 127] (8 bits) is stored as q + 8 / q + 128.
//   4 bits: the scale is m / -8 for the block's largest-magnitude value m (so m maps to -8 exactly
//           and the whole [-8, 7] range is used, as MLAS's own quantizer does); two values per byte,
//           the first in the low nibble.
//   8 bits: the scale is max|x| / 127, one value per byte.
// A row whose length is not a multiple of `block` is padded with zeros to whole blocks.

import { fail } from '../../../shared/errors.ts';

export type QuantBits = 4 | 8;

export interface QuantLayout {
  rows: number;
  cols: number;
  bits: QuantBits;
  block: number;
}

export const blocksPerRow = (l: QuantLayout) => Math.ceil(l.cols / l.block);
/** Bytes of one row of packed data (padded to whole blocks). */
export const rowBytes = (l: QuantLayout) => (blocksPerRow(l) * l.block * l.bits) / 8;

export function checkLayout(l: QuantLayout): void {
  if (l.bits !== 4 && l.bits !== 8) throw fail('FEDLORA_ERR_CONFIG', `quantization bits ${l.bits}: expected 4 or 8`);
  if (!(l.block >= 16 && (l.block & (l.block - 1)) === 0)) throw fail('FEDLORA_ERR_CONFIG', `quantization block size ${l.block}: expected a power of two >= 16`);
}

/** Quantize rows [r0, r0 + n) of a [rows, cols] float32 matrix given as `values` (n × cols) into
 *  `data` (n × rowBytes) and `scales` (n × blocksPerRow). */
export function quantizeRows(values: Float32Array, l: QuantLayout, data: Uint8Array, scales: Float32Array): void {
  const n = values.length / l.cols;
  const nb = blocksPerRow(l);
  const rb = rowBytes(l);
  data.fill(0, 0, n * rb);
  for (let r = 0; r < n; r++) {
    const row = r * l.cols;
    for (let b = 0; b < nb; b++) {
      const start = b * l.block;
      const end = Math.min(l.cols, start + l.block);
      let amax = 0, m = 0;
      for (let i = start; i < end; i++) {
        const v = values[row + i];
        const a = Math.abs(v);
        if (a > amax) { amax = a; m = v; }
      }
      const scale = Math.fround(l.bits === 4 ? m / -8 : amax / 127); // the float32 the kernels read
      scales[r * nb + b] = scale;
      const inv = scale !== 0 ? 1 / scale : 0;
      if (l.bits === 4) {
        for (let i = start; i < start + l.block; i++) {
          const q = i < end ? Math.max(-8, Math.min(7, Math.round(values[row + i] * inv))) + 8 : 8;
          const byte = r * rb + (i >> 1);
          data[byte] |= i & 1 ? q << 4 : q;
        }
      } else {
        for (let i = start; i < start + l.block; i++) {
          data[r * rb + i] = i < end ? Math.max(-127, Math.min(127, Math.round(values[row + i] * inv))) + 128 : 128;
        }
      }
    }
  }
}

/** The float32 values the kernels compute with: (q - 2^(bits-1)) · scale, [n, cols]. */
export function dequantizeRows(data: Uint8Array, scales: Float32Array, l: QuantLayout, n = l.rows): Float32Array {
  const out = new Float32Array(n * l.cols);
  const nb = blocksPerRow(l);
  const rb = rowBytes(l);
  for (let r = 0; r < n; r++) {
    for (let i = 0; i < l.cols; i++) {
      const s = scales[r * nb + Math.floor(i / l.block)];
      const q = l.bits === 4 ? (i & 1 ? data[r * rb + (i >> 1)] >> 4 : data[r * rb + (i >> 1)] & 15) - 8 : data[r * rb + i] - 128;
      out[r * l.cols + i] = q * s;
    }
  }
  return out;
}

/** Both quantized copies of a weight W [rows, cols] the training graph needs: W itself (blocks along
 *  cols, for the forward MatMulNBits) and, given `transposedBlock`, W^T [cols, rows] (blocks of that
 *  size along rows, for the input gradient dX = dY·W, another MatMulNBits). W is read in chunks of rows through `read`, so
 *  only the quantized results (a fraction of W's float32 size) are held in memory. */
export interface QuantizedMatrix {
  data: Uint8Array;
  scales: Float32Array;
  t: { data: Uint8Array; scales: Float32Array } | null;
}

export function quantizeMatrix(
  read: (r0: number, r1: number) => Float32Array, rows: number, cols: number, bits: QuantBits, block: number, transposedBlock: number | null,
): QuantizedMatrix {
  const l: QuantLayout = { rows, cols, bits, block };
  const tb = transposedBlock ?? block;
  const lt: QuantLayout = { rows: cols, cols: rows, bits, block: tb };
  checkLayout(l);
  checkLayout(lt);
  const data = new Uint8Array(rows * rowBytes(l));
  const scales = new Float32Array(rows * blocksPerRow(l));
  const t = transposedBlock ? { data: new Uint8Array(cols * rowBytes(lt)), scales: new Float32Array(cols * blocksPerRow(lt)) } : null;
  // chunks of whole blocks of rows (so the transposed copy's blocks are complete), about 16M values
  const chunk = Math.max(tb, Math.floor((16 * 1024 * 1024) / cols / tb) * tb);
  for (let r0 = 0; r0 < rows; r0 += chunk) {
    const r1 = Math.min(rows, r0 + chunk);
    const w = read(r0, r1);
    quantizeRows(w, l, data.subarray(r0 * rowBytes(l)), scales.subarray(r0 * blocksPerRow(l)));
    if (!t) continue;
    const n = r1 - r0;
    const wt = new Float32Array(cols * n); // the chunk transposed: [cols, n]
    for (let r = 0; r < n; r++) for (let c = 0; c < cols; c++) wt[c * n + r] = w[r * cols + c];
    const part: QuantLayout = { rows: cols, cols: n, bits, block: tb };
    const pd = new Uint8Array(cols * rowBytes(part));
    const ps = new Float32Array(cols * blocksPerRow(part));
    quantizeRows(wt, part, pd, ps);
    // place the chunk's blocks at their column offset in every row of W^T
    const off = (r0 * bits) / 8, boff = r0 / tb;
    for (let c = 0; c < cols; c++) {
      t.data.set(pd.subarray(c * rowBytes(part), (c + 1) * rowBytes(part)), c * rowBytes(lt) + off);
      t.scales.set(ps.subarray(c * blocksPerRow(part), (c + 1) * blocksPerRow(part)), c * blocksPerRow(lt) + boff);
    }
  }
  return { data, scales, t };
}
