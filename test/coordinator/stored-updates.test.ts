// How the round engine hands stored updates to strategies (coordinator/rounds/stored-updates.ts):
// the values of the stored safetensors file in the canonical layout (also when the file lists
// its tensors in another order), one reused buffer only for mean-based strategies, and clear
// errors naming the update and site for missing, truncated or foreign files.
import { afterAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodeSafetensors } from '../../shared/safetensors.ts';
import { unflatten } from '../../shared/tensors.ts';
import { jobLayout } from '../../coordinator/publish/layout.ts';
import { readStoredUpdate, storedUpdateRefs } from '../../coordinator/rounds/stored-updates.ts';
import { createStrategy } from '../../coordinator/strategies/registry.ts';
import type { UpdateRow } from '../../coordinator/store/store.ts';
import { encodeDelta, fakeDelta, rmDir, tempDir, tinySpec } from './helpers.ts';

const dir = tempDir('stored-updates');
afterAll(() => rmDir(dir));
const layout = jobLayout(tinySpec()).update;

function stored(site: string, bytes: Uint8Array): UpdateRow {
  const path = join(dir, `${site}.safetensors`);
  writeFileSync(path, bytes);
  return { update_id: `u-${site}`, site_id: site, path, examples: 3, clipped: null } as UpdateRow;
}

describe('stored updates as strategy inputs', () => {
  const sites = ['s1', 's2', 's3'];
  const flats = sites.map((s) => fakeDelta(layout, s, 1));
  const rows = sites.map((s, k) => stored(s, encodeDelta(layout, flats[k])));

  it('reads the canonical layout, also from a file with its tensors in another order', async () => {
    expect(await readStoredUpdate(rows[0], layout, new Float32Array(layout.total))).toEqual(flats[0]);
    // encodeSafetensors writes sorted names (the layout's order); write one in reverse by hand
    const tensors = [...unflatten(flats[1], layout)].reverse();
    const header: Record<string, unknown> = {};
    let at = 0;
    for (const [name, t] of tensors) {
      header[name] = { dtype: 'F32', shape: t.shape, data_offsets: [at, at + t.data.byteLength] };
      at += t.data.byteLength;
    }
    const json = Buffer.from(JSON.stringify(header));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    const row = stored('rev', Buffer.concat([len, json, ...tensors.map(([, t]) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength))]));
    expect(await readStoredUpdate(row, layout, new Float32Array(layout.total))).toEqual(flats[1]);
  });

  it('mean-based strategies share one buffer and get the in-memory result; robust ones get their own arrays', async () => {
    const ctx = { round: 1, layout, global: new Float32Array(layout.total), selected: 3, state: {}, seed: 1 };
    const direct = new Float32Array(layout.total);
    expect(await storedUpdateRefs(rows, layout, { reuseBuffer: true })[2].loadInto!(direct)).toBe(direct);
    expect(direct).toEqual(flats[2]);
    const shared = storedUpdateRefs(rows, layout, { reuseBuffer: true });
    const a = await shared[0].load();
    expect(await shared[1].load()).toBe(a);
    const own = storedUpdateRefs(rows, layout, { reuseBuffer: false });
    expect(await own[0].load()).not.toBe(await own[1].load());
    const inMemory = flats.map((f) => ({ siteId: 'x', numExamples: 3, load: async () => Float32Array.from(f) }));
    for (const name of ['fedavg', 'median']) {
      const s = createStrategy({ name });
      const want = await s.aggregate(inMemory.map((r, k) => ({ ...r, siteId: sites[k] })), ctx);
      const got = await s.aggregate(storedUpdateRefs(rows, layout, { reuseBuffer: s.meanBased === true }), ctx);
      expect(got.global).toEqual(want.global);
    }
  });

  it('missing, truncated and foreign files fail naming the update and the site', async () => {
    const dst = new Float32Array(layout.total);
    const missing = { ...rows[0], path: join(dir, 'nope') };
    await expect(readStoredUpdate(missing, layout, dst)).rejects.toThrow(expect.objectContaining({ code: 'FEDLORA_ERR_IO', message: expect.stringMatching(/update u-s1 of site s1 .*cannot open/) }));
    const full = encodeDelta(layout, flats[2]);
    await expect(readStoredUpdate(stored('short', full.subarray(0, full.length - 10)), layout, dst)).rejects.toThrow(/update u-short of site short .*file ends after/);
    await expect(readStoredUpdate(stored('other', encodeSafetensors({ w: { dtype: 'F32', shape: [1], data: new Float32Array(1) } })), layout, dst)).rejects.toThrow(expect.objectContaining({ code: 'FEDLORA_ERR_UPDATE_INVALID' }));
  });
});
