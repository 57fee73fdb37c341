// Small dense linear algebra in float64 for exact LoRA aggregation: row-major matrices,
// Householder thin QR and a one-sided (Hestenes) Jacobi SVD. Sizes here are (Kr x Kr) cores
// and (out x Kr) / (in x Kr) factors, never out x in.

export interface Mat {
  rows: number;
  cols: number;
  data: Float64Array; // row-major
}

export const mat = (rows: number, cols: number, data?: ArrayLike<number>): Mat => ({ rows, cols, data: data ? Float64Array.from(data) : new Float64Array(rows * cols) });

export function matmul(a: Mat, b: Mat): Mat {
  const out = mat(a.rows, b.cols);
  for (let i = 0; i < a.rows; i++) for (let k = 0; k < a.cols; k++) {
    const x = a.data[i * a.cols + k];
    if (x === 0) continue;
    for (let j = 0; j < b.cols; j++) out.data[i * b.cols + j] += x * b.data[k * b.cols + j];
  }
  return out;
}

export function transpose(a: Mat): Mat {
  const out = mat(a.cols, a.rows);
  for (let i = 0; i < a.rows; i++) for (let j = 0; j < a.cols; j++) out.data[j * a.rows + i] = a.data[i * a.cols + j];
  return out;
}

/** Thin QR by Householder reflections: a (m x n) = Q (m x k) R (k x n), k = min(m, n). */
export function householderQR(a: Mat): { q: Mat; r: Mat } {
  const m = a.rows, n = a.cols, k = Math.min(m, n);
  const R = Float64Array.from(a.data);
  const vs: Float64Array[] = [];
  for (let j = 0; j < k; j++) {
    let norm = 0;
    for (let i = j; i < m; i++) norm += R[i * n + j] ** 2;
    norm = Math.sqrt(norm);
    const v = new Float64Array(m);
    if (norm === 0) { vs.push(v); continue; }
    const alpha = R[j * n + j] > 0 ? -norm : norm;
    for (let i = j; i < m; i++) v[i] = R[i * n + j];
    v[j] -= alpha;
    let vn = 0;
    for (let i = j; i < m; i++) vn += v[i] * v[i];
    if (vn === 0) { vs.push(new Float64Array(m)); continue; }
    // R <- (I - 2 v v^T / v^T v) R
    for (let c = j; c < n; c++) {
      let dot = 0;
      for (let i = j; i < m; i++) dot += v[i] * R[i * n + c];
      const f = (2 * dot) / vn;
      for (let i = j; i < m; i++) R[i * n + c] -= f * v[i];
    }
    for (let i = j; i < m; i++) v[i] /= Math.sqrt(vn / 2); // now H = I - v v^T
    vs.push(v);
  }
  // Q = H_0 H_1 ... H_{k-1} applied to the first k columns of I
  const Q = new Float64Array(m * k);
  for (let i = 0; i < k; i++) Q[i * k + i] = 1;
  for (let j = k - 1; j >= 0; j--) {
    const v = vs[j];
    for (let c = 0; c < k; c++) {
      let dot = 0;
      for (let i = j; i < m; i++) dot += v[i] * Q[i * k + c];
      for (let i = j; i < m; i++) Q[i * k + c] -= dot * v[i];
    }
  }
  const r = mat(k, n);
  for (let i = 0; i < k; i++) for (let c = i; c < n; c++) r.data[i * n + c] = R[i * n + c];
  return { q: { rows: m, cols: k, data: Q }, r };
}

/** SVD a (m x n) = U diag(s) V^T with s descending; U (m x p), V (n x p), p = min(m, n).
 *  One-sided Jacobi on the columns (on the transpose when m < n). */
export function jacobiSVD(a: Mat): { u: Mat; s: Float64Array; v: Mat } {
  if (a.rows < a.cols) {
    const t = jacobiSVD(transpose(a));
    return { u: t.v, s: t.s, v: t.u };
  }
  const m = a.rows, n = a.cols;
  const U = Float64Array.from(a.data);
  const V = new Float64Array(n * n);
  for (let i = 0; i < n; i++) V[i * n + i] = 1;
  for (let sweep = 0; sweep < 60; sweep++) {
    let rotated = false;
    for (let p = 0; p < n - 1; p++) for (let q = p + 1; q < n; q++) {
      let al = 0, be = 0, ga = 0;
      for (let i = 0; i < m; i++) {
        const x = U[i * n + p], y = U[i * n + q];
        al += x * x; be += y * y; ga += x * y;
      }
      if (Math.abs(ga) <= 1e-15 * Math.sqrt(al * be) || ga === 0) continue;
      rotated = true;
      const zeta = (be - al) / (2 * ga);
      const t = Math.sign(zeta || 1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
      const c = 1 / Math.sqrt(1 + t * t), s = c * t;
      for (let i = 0; i < m; i++) {
        const x = U[i * n + p], y = U[i * n + q];
        U[i * n + p] = c * x - s * y;
        U[i * n + q] = s * x + c * y;
      }
      for (let i = 0; i < n; i++) {
        const x = V[i * n + p], y = V[i * n + q];
        V[i * n + p] = c * x - s * y;
        V[i * n + q] = s * x + c * y;
      }
    }
    if (!rotated) break;
  }
  const sv = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    let s = 0;
    for (let i = 0; i < m; i++) s += U[i * n + j] ** 2;
    sv[j] = Math.sqrt(s);
  }
  const order = [...Array(n).keys()].sort((x, y) => sv[y] - sv[x]);
  const u = mat(m, n), v = mat(n, n), s = new Float64Array(n);
  order.forEach((j, c) => {
    s[c] = sv[j];
    for (let i = 0; i < m; i++) u.data[i * n + c] = sv[j] > 0 ? U[i * n + j] / sv[j] : 0;
    for (let i = 0; i < n; i++) v.data[i * n + c] = V[i * n + j];
  });
  return { u, s, v };
}
