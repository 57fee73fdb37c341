// File-backed UpdateRefs: correct values, buffer reuse only for streaming strategies, read-ahead,
// and clear errors for short or missing files.
import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileUpdateRefs } from '../../coordinator/strategies/file-updates.ts';
import { createStrategy } from '../../coordinator/strategies/registry.ts';
import { ctxOf, flatLayout, maxAbsDiff, randomVec, refs } from './helpers.ts';

describe('fileUpdateRefs', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fedlora-fileupd-'));
  const n = 1000;
  const vecs = [1, 2, 3, 4].map((s) => randomVec(n, s));
  const files = vecs.map((v, k) => { const f = join(dir, `u${k}.f32`); writeFileSync(f, Buffer.from(v.buffer)); return f; });
  const ups = files.map((path, k) => ({ siteId: `s${k}`, numExamples: k + 1, path }));
  const L = flatLayout(n);

  it.each([[false, false], [true, false], [true, true], [false, true]])('reuse %s, read-ahead %s: FedAvg equals the in-memory result', async (reuseBuffers, readAhead) => {
    const expected = await createStrategy({ name: 'fedavg' }).aggregate(refs(vecs, [1, 2, 3, 4]), ctxOf(L));
    const got = await createStrategy({ name: 'fedavg' }).aggregate(fileUpdateRefs(ups, n, { reuseBuffers, readAhead }), ctxOf(L));
    expect(maxAbsDiff(got.global, expected.global)).toBeLessThan(1e-7);
  });
  it('without buffer reuse, robust strategies (which hold every update) get distinct arrays', async () => {
    const expected = await createStrategy({ name: 'median' }).aggregate(refs(vecs), ctxOf(L));
    const got = await createStrategy({ name: 'median' }).aggregate(fileUpdateRefs(ups, n, { readAhead: true }), ctxOf(L));
    expect(maxAbsDiff(got.global, expected.global)).toBe(0);
  });
  it('short and missing files fail naming the site and path', async () => {
    const short = join(dir, 'short.f32');
    writeFileSync(short, Buffer.alloc(40));
    await expect(fileUpdateRefs([{ siteId: 'sx', numExamples: 1, path: short }], n)[0].load()).rejects.toThrow(/site sx: .*short\.f32 holds 10 float32 values, the adapter layout has 1000/);
    await expect(fileUpdateRefs([{ siteId: 'sy', numExamples: 1, path: join(dir, 'nope') }], n, { readAhead: true })[0].load()).rejects.toMatchObject({ code: 'FEDLORA_ERR_IO' });
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
});
