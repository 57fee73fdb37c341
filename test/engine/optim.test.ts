// Optimizer, schedule, clipping and FedProx against hand-computed steps, and AdamW/SGD against
// torch.optim over several steps with random gradients (Debian's python3-torch: when it is missing
// these fail with the command that installs it).
import { describe, expect, it } from 'vitest';
import { Optimizer } from '../../site-agent/engine/train/optim.ts';
import { lrAt } from '../../site-agent/engine/train/schedule.ts';
import { accumulate, addProximal, clipGradNorm } from '../../site-agent/engine/train/grads.ts';
import { l2norm } from '../../shared/tensors.ts';
import { Rng } from '../../shared/prng.ts';
import { PYTHON, requireTool, TORCH } from '../runner/reference-tools.ts';
import { runProcess } from '../runner/run-process.ts';

const m = (o: Record<string, number[]>) => new Map(Object.entries(o).map(([k, v]) => [k, Float32Array.from(v)]));

describe('AdamW (hand-computed)', () => {
  it('first step moves each weight by lr·sign(g) after decoupled decay', () => {
    const opt = new Optimizer({ kind: 'adamw', weightDecay: 0.1, eps: 1e-8 });
    const p = m({ w: [1, -2, 0.5] });
    opt.step(p, m({ w: [0.3, -4, 0] }), 0.01);
    // p*(1-lr*wd) - lr * (0.1g/0.1) / (sqrt(0.001 g²)/sqrt(0.001) + eps)
    const exp = [1 * 0.999 - 0.01 * (0.3 / (0.3 + 1e-8)), -2 * 0.999 + 0.01 * (4 / (4 + 1e-8)), 0.5 * 0.999];
    for (let i = 0; i < 3; i++) expect(p.get('w')![i]).toBeCloseTo(exp[i], 6);
  });

  it('second step uses bias-corrected moments', () => {
    const opt = new Optimizer({ kind: 'adamw', weightDecay: 0, betas: [0.9, 0.999], eps: 1e-8 });
    const p = m({ w: [0] });
    opt.step(p, m({ w: [1] }), 0.1);
    opt.step(p, m({ w: [3] }), 0.1);
    const m2 = 0.9 * 0.1 + 0.1 * 3; // 0.39
    const v2 = 0.999 * 0.001 + 0.001 * 9; // 0.009999
    const upd2 = (0.1 / (1 - 0.81)) * m2 / (Math.sqrt(v2) / Math.sqrt(1 - 0.999 ** 2) + 1e-8);
    expect(p.get('w')![0]).toBeCloseTo(-0.1 - upd2, 6);
    expect(opt.stepCount).toBe(2);
  });

  it('state export/import continues identically', () => {
    const a = new Optimizer({ kind: 'adamw', weightDecay: 0.01 });
    const pa = m({ w: [0.1, 0.2], u: [1] });
    a.step(pa, m({ w: [0.5, -0.5], u: [2] }), 1e-2);
    const b = new Optimizer({ kind: 'adamw', weightDecay: 0.01 });
    b.loadState(a.exportState());
    const pb = new Map([...pa].map(([k, v]) => [k, new Float32Array(v)]));
    a.step(pa, m({ w: [0.1, 0.3], u: [-1] }), 5e-3);
    b.step(pb, m({ w: [0.1, 0.3], u: [-1] }), 5e-3);
    expect([...pb.get('w')!, ...pb.get('u')!]).toEqual([...pa.get('w')!, ...pa.get('u')!]);
  });

  it('rejects bad hyper-parameters with FEDLORA_ERR_CONFIG', () => {
    expect(() => new Optimizer({ kind: 'adamw', weightDecay: -1 })).toThrow(/FEDLORA_ERR_CONFIG|weightDecay/);
    expect(() => new Optimizer({ kind: 'nope' as 'sgd', weightDecay: 0 })).toThrow(/optimizer "nope"/);
  });
});

describe('SGD (hand-computed)', () => {
  it('plain SGD with weight decay', () => {
    const opt = new Optimizer({ kind: 'sgd', weightDecay: 0.5 });
    const p = m({ w: [2] });
    opt.step(p, m({ w: [1] }), 0.1);
    expect(p.get('w')![0]).toBeCloseTo(2 - 0.1 * (1 + 0.5 * 2), 6);
  });
  it('momentum buffer starts at the first gradient, then b = mu·b + g', () => {
    const opt = new Optimizer({ kind: 'sgd', weightDecay: 0, momentum: 0.9 });
    const p = m({ w: [0] });
    opt.step(p, m({ w: [1] }), 1);
    expect(p.get('w')![0]).toBeCloseTo(-1, 6);
    opt.step(p, m({ w: [1] }), 1);
    expect(p.get('w')![0]).toBeCloseTo(-1 - 1.9, 6);
  });
});

describe('schedule, clipping, accumulation, FedProx', () => {
  it('linear warm-up then cosine to zero', () => {
    const o = { lr: 1e-3, warmupSteps: 4, totalSteps: 14 };
    expect(lrAt(0, o)).toBe(0);
    expect(lrAt(2, o)).toBeCloseTo(5e-4, 12);
    expect(lrAt(4, o)).toBeCloseTo(1e-3, 12);
    expect(lrAt(9, o)).toBeCloseTo(5e-4, 12); // half way through the cosine
    expect(lrAt(14, o)).toBeCloseTo(0, 12);
    expect(lrAt(9, { ...o, minLrRatio: 0.1 })).toBeCloseTo(1e-4 + 0.9 * 5e-4, 12);
    expect(lrAt(0, { lr: 1, warmupSteps: 0, totalSteps: 10 })).toBe(1);
  });
  it('clips to the global norm across tensors', () => {
    const g = m({ a: [3, 0], b: [0, 4] });
    expect(l2norm(g.values())).toBeCloseTo(5, 10);
    const before = clipGradNorm(g, 1);
    expect(before).toBeCloseTo(5, 10);
    expect(g.get('a')![0]).toBeCloseTo(3 / (5 + 1e-6), 6);
    expect(l2norm(g.values())).toBeCloseTo(1, 5);
    const small = m({ a: [0.3] });
    clipGradNorm(small, 1);
    expect(small.get('a')![0]).toBeCloseTo(0.3, 7);
  });
  it('accumulates micro-batch gradients and adds mu·(w − w_global)', () => {
    const acc = new Map<string, Float32Array>();
    accumulate(acc, m({ a: [1, 2], z: [9] }), ['a']);
    accumulate(acc, m({ a: [0.5, 0.5] }), ['a']);
    expect([...acc.get('a')!]).toEqual([1.5, 2.5]);
    expect(acc.has('z')).toBe(false);
    addProximal(acc, m({ a: [1, 1] }), m({ a: [0, 2] }), 0.1);
    expect(acc.get('a')![0]).toBeCloseTo(1.6, 6);
    expect(acc.get('a')![1]).toBeCloseTo(2.4, 6);
  });
});

describe('against torch.optim', () => {
  const script = `
import json, sys, torch
cfg = json.loads(sys.stdin.read())
p = torch.nn.Parameter(torch.tensor(cfg['p'], dtype=torch.float32))
if cfg['kind'] == 'adamw':
    opt = torch.optim.AdamW([p], lr=cfg['lrs'][0], betas=(0.9, 0.999), eps=1e-8, weight_decay=cfg['wd'], foreach=False)
else:
    opt = torch.optim.SGD([p], lr=cfg['lrs'][0], momentum=cfg['momentum'], weight_decay=cfg['wd'], nesterov=cfg['nesterov'], foreach=False)
for g, lr in zip(cfg['grads'], cfg['lrs']):
    for grp in opt.param_groups: grp['lr'] = lr
    p.grad = torch.tensor(g, dtype=torch.float32)
    opt.step()
print(json.dumps(p.detach().tolist()))
`;
  const cases = [
    { kind: 'adamw' as const, wd: 0.01, momentum: 0, nesterov: false },
    { kind: 'sgd' as const, wd: 0.001, momentum: 0.9, nesterov: false },
    { kind: 'sgd' as const, wd: 0, momentum: 0.8, nesterov: true },
  ];
  for (const c of cases) {
    it(`${c.kind} wd=${c.wd} momentum=${c.momentum} nesterov=${c.nesterov} matches over 6 steps`, async () => {
      await requireTool(TORCH);
      const rng = Rng.derive(7, c.kind, c.momentum);
      const n = 32;
      const p0 = Array.from({ length: n }, () => Math.fround(rng.nextFloat() * 2 - 1));
      const grads = Array.from({ length: 6 }, () => Array.from({ length: n }, () => Math.fround((rng.nextFloat() - 0.5) * 0.2)));
      const lrs = [1e-2, 8e-3, 6e-3, 4e-3, 2e-3, 1e-3];
      const r = await runProcess(PYTHON, ['-c', script], { input: JSON.stringify({ ...c, p: p0, grads, lrs }) });
      expect(r.status, r.stderr).toBe(0);
      const want = JSON.parse(r.stdout) as number[];
      const opt = new Optimizer({ kind: c.kind, weightDecay: c.wd, momentum: c.momentum, nesterov: c.nesterov });
      const p = new Map([['w', Float32Array.from(p0)]]);
      grads.forEach((g, i) => opt.step(p, new Map([['w', Float32Array.from(g)]]), lrs[i]));
      const got = p.get('w')!;
      let maxErr = 0;
      for (let i = 0; i < n; i++) maxErr = Math.max(maxErr, Math.abs(got[i] - want[i]));
      expect(maxErr).toBeLessThan(2e-6);
      // and the update is not trivially zero
      expect(Math.abs(got[0] - p0[0])).toBeGreaterThan(1e-4);
    });
  }
});
