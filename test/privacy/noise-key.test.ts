// The coordinator's secret DP noise key (coordinator/privacy/noise-key.ts) and the DP wrapper's
// use of RoundContext.noiseKey: the same key and round give the same noise (a round redone
// after a crash publishes the same adapter), another key gives other noise, no key gives fresh
// noise, and deterministicNoise (tests/audits) still derives from the seed alone.
import { chmodSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadNoiseKey, noiseKeyPathOf, roundNoiseKey } from '../../coordinator/privacy/noise-key.ts';
import { createStrategy } from '../../coordinator/strategies/registry.ts';
import { parseCoordinatorConfig } from '../../coordinator/config.ts';
import { ctxOf, loraLayout, randomVec, refs } from '../strategies/helpers.ts';

const dir = mkdtempSync(join(tmpdir(), 'fedlora-noise-key-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('DP noise key file', () => {
  it('is made once (32 random bytes, 0600 in a 0700 folder) and then read back', () => {
    const file = noiseKeyPathOf(dir);
    expect(file).toBe(join(dir, 'secrets', 'dp-noise.key'));
    const k1 = loadNoiseKey(file);
    expect(k1.length).toBe(32);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'secrets')).mode & 0o777).toBe(0o700);
    expect(loadNoiseKey(file)).toEqual(k1);
    expect(loadNoiseKey(noiseKeyPathOf(join(dir, 'other')))).not.toEqual(k1);
  });
  it('configured paths: absolute as is, relative to the data dir', () => {
    expect(noiseKeyPathOf('/srv/coord', '/run/secrets/dp.key')).toBe('/run/secrets/dp.key');
    expect(noiseKeyPathOf('/srv/coord', 'vault/dp.key')).toBe('/srv/coord/vault/dp.key');
    expect(parseCoordinatorConfig({ privacy: { noise_key_file: '/run/secrets/dp.key' } }).privacy.noise_key_file).toBe('/run/secrets/dp.key');
    expect(parseCoordinatorConfig({}).privacy).toEqual({});
    expect(() => parseCoordinatorConfig({ privacy: { noise_key: 'abc' } })).toThrow(/privacy/);
  });
  it('refuses a key of the wrong size naming the file; warns when group/other can read it', () => {
    const bad = join(dir, 'short.key');
    writeFileSync(bad, 'too short', { mode: 0o600 });
    expect(() => loadNoiseKey(bad)).toThrow(expect.objectContaining({ code: 'FEDLORA_ERR_CONFIG', message: expect.stringContaining(`${bad} holds 9 bytes`) }));
    const open = join(dir, 'open.key');
    writeFileSync(open, Buffer.alloc(32, 7));
    chmodSync(open, 0o644);
    const warnings: string[] = [];
    expect(loadNoiseKey(open, warnings)).toEqual(Buffer.alloc(32, 7));
    expect(warnings).toEqual([`${open} is readable by group or others; the DP noise key should be mode 0600`]);
  });
  it('round keys are bound to key, job, round, attempt and seed', () => {
    const k = Buffer.alloc(32, 1);
    const base = roundNoiseKey(k, 'job-a', 1, 1, 42);
    expect(roundNoiseKey(k, 'job-a', 1, 1, 42)).toEqual(base);
    const others = [roundNoiseKey(Buffer.alloc(32, 2), 'job-a', 1, 1, 42), roundNoiseKey(k, 'job-b', 1, 1, 42), roundNoiseKey(k, 'job-a', 2, 1, 42),
      roundNoiseKey(k, 'job-a', 1, 2, 42), roundNoiseKey(k, 'job-a', 1, 1, 43)];
    for (const o of others) expect(o).not.toEqual(base);
    expect(new Set([base, ...others].map((b) => b.toString('hex'))).size).toBe(6);
  });
});

describe('DP wrapper with RoundContext.noiseKey', () => {
  const L = loraLayout(2, 2, 3, 4);
  const vs = [1, 2, 3].map((s) => randomVec(L.total, s, 0.5));
  const dp = { clip_norm: 0.5, noise_multiplier: 1, delta: 1e-5, epsilon_budget: 100, sample_rate: 1, adaptive_clipping: true };
  const run = async (noiseKey: Buffer | undefined, deterministicNoise = false, seed = 7) => {
    const st = createStrategy({ name: 'fedavg' }, { dp, expectedSites: 3, deterministicNoise });
    return st.aggregate(refs(vs), ctxOf(L, { selected: 3, seed, ...(noiseKey ? { noiseKey } : {}) }));
  };
  const key1 = roundNoiseKey(Buffer.alloc(32, 1), 'job', 1, 1, 7);
  const key2 = roundNoiseKey(Buffer.alloc(32, 2), 'job', 1, 1, 7);

  it('same key and seed: bit-identical result (delta noise and clip-bit noise)', async () => {
    const [a, b] = [await run(key1), await run(key1)];
    expect(Buffer.from(a.global.buffer)).toEqual(Buffer.from(b.global.buffer));
    expect(a.metrics).toEqual(b.metrics);
    expect(a.state).toEqual(b.state);
    expect(a.metrics.dp_noise_std).toBeGreaterThan(0);
  });
  it('another key, another seed, or no key: other noise', async () => {
    const a = await run(key1);
    for (const other of [await run(key2), await run(key1, false, 8), await run(undefined), await run(undefined)]) {
      expect(Buffer.from(other.global.buffer)).not.toEqual(Buffer.from(a.global.buffer));
      expect(other.metrics.dp_unclipped_fraction).not.toBe(a.metrics.dp_unclipped_fraction);
    }
  });
  it('deterministicNoise still derives from the seed alone (a key does not change it)', async () => {
    const [seedOnly, withKey] = [await run(undefined, true), await run(key1, true)];
    expect(Buffer.from(withKey.global.buffer)).toEqual(Buffer.from(seedOnly.global.buffer));
    expect(Buffer.from(withKey.global.buffer)).not.toEqual(Buffer.from((await run(key1)).global.buffer));
  });
});
