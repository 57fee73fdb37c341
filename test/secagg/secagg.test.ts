// Secure aggregation end to end over the pure stage functions (what the gRPC layer carries),
// with dropouts at each stage, plus the privacy properties of what the coordinator stores.
import { describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import {
  advertiseKeys, aggregateMasked, collectAdvertise, maskInput, routeShares, shareKeys, unmask, unmaskShares,
  type SecAggConfig, type SiteSecAggState,
} from '../../shared/secagg/protocol.ts';
import { combine, interpolate, P, split } from '../../shared/secagg/shamir.ts';
import { dequantizeSum, levelsFor, quantize } from '../../shared/secagg/quantize.ts';
import { randomVec } from '../strategies/helpers.ts';
import { runRound } from './helpers.ts';

const DIM = 64;
const C = 1;
function inputsFor(n: number) {
  return new Map<string, Float32Array>(Array.from({ length: n }, (_, k) => [`site-${String(k).padStart(2, "0")}`, randomVec(DIM, 500 + k, 1.6)]));
}
function plainSum(inputs: Map<string, Float32Array>, ids: string[]) {
  const out = new Float64Array(DIM);
  for (const id of ids) inputs.get(id)!.forEach((x, i) => (out[i] += Math.max(-C, Math.min(C, x))));
  return out;
}
const maxErr = (a: ArrayLike<number>, b: ArrayLike<number>) => { let m = 0; for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i])); return m; };

describe('secure aggregation', () => {
  const n = 7, t = 4;
  const cfg: SecAggConfig = { round: 3, threshold: t, clipRange: C, dim: DIM };
  const inputs = inputsFor(n);
  const ids = [...inputs.keys()];
  const tol = (m: number) => (m * 2 * C) / levelsFor(n) + 1e-5;

  it('no dropouts: unmasked sum = plain sum of clipped inputs within quantisation error', () => {
    const r = runRound(inputs, cfg);
    expect(r.count).toBe(n);
    expect(maxErr(r.sum, plainSum(inputs, ids))).toBeLessThan(tol(n));
  });
  it('1 dropout after sharing keys (pairwise masks reconstructed from t shares)', () => {
    const r = runRound(inputs, cfg, { dropBeforeMask: [ids[2]] });
    expect(r.agg.dropped).toEqual([ids[2]]);
    expect(maxErr(r.sum, plainSum(inputs, ids.filter((x) => x !== ids[2])))).toBeLessThan(tol(n));
  });
  it('t - 1 = 3 dropouts (before masking and after submitting) still unmask', () => {
    const r = runRound(inputs, cfg, { dropBeforeMask: [ids[0], ids[5]], dropBeforeUnmask: [ids[3]] });
    // ids[3] submitted its masked input, then vanished: its input is in the sum
    expect(maxErr(r.sum, plainSum(inputs, ids.filter((x) => x !== ids[0] && x !== ids[5])))).toBeLessThan(tol(n));
  });
  it('a site that never shared keys is simply not in the round', () => {
    const r = runRound(inputs, cfg, { dropBeforeShare: [ids[6]] });
    expect(maxErr(r.sum, plainSum(inputs, ids.slice(0, 6)))).toBeLessThan(tol(n));
  });
  it('more than n - t dropouts fail with a clear FEDLORA_ERR_SECAGG', () => {
    expect(() => runRound(inputs, cfg, { dropBeforeMask: ids.slice(0, 4) })).toThrow(/only 3 of 7 sites submitted masked inputs \(4 dropped\); threshold 4/);
    expect(() => runRound(inputs, cfg, { dropBeforeMask: ids.slice(0, 2), dropBeforeUnmask: ids.slice(2, 4) })).toThrow(expect.objectContaining({ code: 'FEDLORA_ERR_SECAGG', message: expect.stringMatching(/answered the unmask request, threshold 4/) }));
  });
  it('a masked vector is statistically unrelated to its input (uniform on Z_2^32)', () => {
    const big = 4096;
    const c2: SecAggConfig = { ...cfg, dim: big };
    const zeros = new Map<string, Float32Array>(ids.slice(0, 4).map((id, k) => [id, k === 0 ? new Float32Array(big).fill(0.9) : randomVec(big, k)]));
    const r = runRound(zeros, { ...c2, threshold: 3 });
    const y = new Uint32Array(Buffer.from(r.masked[0].masked, 'base64').buffer.slice(0));
    // the input is constant 0.9 -> quantised to ~0.95 L (one narrow band); the masked values look uniform
    const bins = new Array(16).fill(0);
    for (const v of y) bins[v >>> 28]++;
    const expected = big / 16;
    const chi2 = bins.reduce((a, b) => a + (b - expected) ** 2 / expected, 0);
    expect(chi2).toBeLessThan(45); // 15 dof, p ~ 1e-4
    const mean = y.reduce((a, b) => a + b, 0) / big;
    expect(Math.abs(mean / 2 ** 32 - 0.5)).toBeLessThan(0.03);
    // and the quantised input itself is far from uniform
    const q = quantize(zeros.get(ids[0])!, C, 4);
    expect(new Set([...q].map((v) => v >>> 28)).size).toBe(1);
  });
  it('an honest site refuses to reveal both shares of one peer, and checks the partition', () => {
    const states = new Map<string, SiteSecAggState>();
    const c4 = { ...cfg, threshold: 2 };
    const three = ids.slice(0, 3);
    const adv = three.map((id) => { const r = advertiseKeys(id, c4); states.set(id, r.state); return r.msg; });
    const roster = collectAdvertise(c4, adv);
    const sm = three.map((id) => { const r = shareKeys(states.get(id)!, roster); states.set(id, r.state); return r.msg; });
    const { u2, inboxes } = routeShares(roster, sm);
    for (const id of three) states.set(id, maskInput(states.get(id)!, inboxes[id], inputs.get(id)!).state);
    expect(() => unmaskShares(states.get(three[0])!, { round: 3, survivors: three, dropped: [three[1]] })).toThrow(/both shares of site/);
    expect(() => unmaskShares(states.get(three[0])!, { round: 3, survivors: three.slice(0, 2), dropped: [] })).toThrow(/partition/);
    expect(u2).toEqual(three);
  });
  it('a tampered share does not decrypt', () => {
    const states = new Map<string, SiteSecAggState>();
    const three = ids.slice(0, 3);
    const c3 = { ...cfg, threshold: 2 };
    const adv = three.map((id) => { const r = advertiseKeys(id, c3); states.set(id, r.state); return r.msg; });
    const roster = collectAdvertise(c3, adv);
    const sm = three.map((id) => { const r = shareKeys(states.get(id)!, roster); states.set(id, r.state); return r.msg; });
    const ct = Buffer.from(sm[1].shares[0].ct, 'base64'); ct[20] ^= 1;
    sm[1].shares[0].ct = ct.toString('base64');
    const { inboxes } = routeShares(roster, sm);
    const to = sm[1].shares[0].to;
    expect(() => maskInput(states.get(to)!, inboxes[to], inputs.get(to)!)).toThrow(/does not decrypt/);
  });
});

describe('Shamir t-of-n', () => {
  it('any t shares reconstruct a 32-byte secret; t - 1 do not', () => {
    const secret = randomBytes(32);
    const shares = split(secret, 3, 5);
    expect(combine([shares[4], shares[1], shares[2]], 3, 32).equals(secret)).toBe(true);
    expect(combine([shares[0], shares[3], shares[4]], 3, 32).equals(secret)).toBe(true);
    expect(() => combine(shares.slice(0, 2), 3, 32)).toThrow(/threshold is 3/);
  });
  it('t - 1 shares are consistent with every candidate secret (they reveal nothing)', () => {
    const secret = randomBytes(32);
    const shares = split(secret, 3, 5).slice(0, 2);
    // For ANY candidate value s' of chunk 0 there is a degree-2 polynomial through (0, s') and the
    // 2 shares — check that interpolating with (0, s') as a third point reproduces both shares.
    for (const candidate of [0n, 1n, P - 1n, BigInt('0x' + randomBytes(15).toString('hex'))]) {
      const pts = [{ x: 0, y: [candidate.toString(16)] }, ...shares.map((s) => ({ x: s.x, y: [s.y[0]] }))];
      // value at 0 of the polynomial through pts is the candidate, and it passes through both shares
      expect(interpolate(pts, 0n)[0]).toBe(candidate);
      for (const s of shares) expect(interpolate(pts, BigInt(s.x))[0]).toBe(BigInt('0x' + s.y[0]));
    }
    // and the share values of two different secrets are identically distributed: top bit ~ 1/2
    let ones = 0;
    for (let k = 0; k < 400; k++) ones += Number(BigInt('0x' + split(Buffer.alloc(32), 3, 5)[0].y[0]) >> 126n);
    expect(ones).toBeGreaterThan(150);
    expect(ones).toBeLessThan(250);
  });
});

describe('quantisation bound', () => {
  it('n sites at the clip bound do not overflow Z_2^32 and decode exactly', () => {
    const n = 50;
    const L = levelsFor(n);
    expect(n * L).toBeLessThanOrEqual(0xffffffff);
    const top = quantize(Float32Array.from([5, -5, 1, -1]), 1, n);
    expect([...top]).toEqual([L, 0, L, 0]);
    const sum = new Uint32Array(4);
    for (let k = 0; k < n; k++) for (let i = 0; i < 4; i++) sum[i] = (sum[i] + top[i]) >>> 0;
    expect([...dequantizeSum(sum, 1, n, n)]).toEqual([50, -50, 50, -50]);
  });
  it('stochastic rounding is unbiased', () => {
    const n = 2 ** 19; // coarse grid to make rounding visible: L = 8191
    const x = new Float32Array(20000).fill(0.3001);
    const q = quantize(x, 1, n);
    const mean = dequantizeSum(Uint32Array.from([q.reduce((a, b) => a + b, 0)]), 1, n, x.length)[0] / x.length;
    expect(Math.abs(mean - 0.3001)).toBeLessThan(2e-5);
  });
});

describe('secure aggregation at consortium scale', () => {
  it('50 sites, t = 26, 2 drop before masking and 1 after submitting: exact sum', () => {
    const inputs = new Map<string, Float32Array>(Array.from({ length: 50 }, (_, k) => [`s${String(k).padStart(2, '0')}`, new Float32Array(256).fill(0.01 * (k % 5))]));
    const r = runRound(inputs, { round: 9, threshold: 26, clipRange: 1, dim: 256 }, { dropBeforeMask: ['s03', 's07'], dropBeforeUnmask: ['s10'] });
    expect(r.count).toBe(48);
    // all 50 sum to 10 x (0 + .01 + .02 + .03 + .04) = 1.0; minus s03 (0.03) and s07 (0.02)
    for (const x of r.sum) expect(Math.abs(x - 0.95)).toBeLessThan((48 * 2) / levelsFor(50) + 1e-6);
  });
});

describe('site-side L2 clipping before masking', async () => {
  const { clipL2InPlace } = await import('../../shared/secagg/quantize.ts');
  it('scales to norm C and reports the unclipped bit', () => {
    const x = Float32Array.from([3, 4]);
    expect(clipL2InPlace(x, 2.5)).toEqual({ norm: 5, unclippedBit: 0 });
    expect(Math.hypot(...x)).toBeCloseTo(2.5, 6);
    expect(clipL2InPlace(Float32Array.from([0.3, 0.4]), 1)).toEqual({ norm: expect.closeTo(0.5, 6), unclippedBit: 1 });
  });
});

describe('what the coordinator holds after a round reveals no single input', async () => {
  const { selfMaskKey } = await import('../../shared/secagg/protocol.ts');
  const { combine } = await import('../../shared/secagg/shamir.ts');
  const { expandMask } = await import('../../shared/secagg/prg.ts');
  it('even with every survivor\'s self mask reconstructed, a masked vector stays uniform (pairwise masks remain)', () => {
    const dim = 4096;
    const ins = new Map<string, Float32Array>(['a', 'b', 'c', 'd'].map((id) => [id, new Float32Array(dim).fill(0.3)]));
    const r = runRound(ins, { round: 2, threshold: 3, clipRange: 1, dim });
    // the server legitimately learns b_a from the survivors' self-mask shares
    const shares = r.answers.flatMap((m) => m.selfShares.filter((s) => s.of === 'a').map((s) => s.share));
    const ba = combine(shares, 3, 32);
    const ya = new Uint32Array(Buffer.from(r.masked.find((m) => m.siteId === 'a')!.masked, 'base64').buffer.slice(0));
    const self = expandMask(selfMaskKey(ba, 2), dim);
    const stripped = ya.map((y, i) => (y - self[i]) >>> 0);
    const bins = new Array(16).fill(0);
    for (const v of stripped) bins[v >>> 28]++;
    const chi2 = bins.reduce((acc, b) => acc + (b - dim / 16) ** 2 / (dim / 16), 0);
    expect(chi2).toBeLessThan(45); // still uniform: the constant input 0.3 is not visible
    // whereas the quantised input would sit in one bin
    expect(new Set([...quantize(ins.get('a')!, 1, 4)].map((v) => v >>> 28)).size).toBe(1);
    // and no site ever sent a key share of a survivor
    expect(r.answers.every((m) => m.keyShares.length === 0)).toBe(true);
  });
});
