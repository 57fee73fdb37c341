// The pipeline's link to the de-identifier fails closed: no module, no ingest.
import { describe, it, expect, afterAll } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { randomBytes } from 'node:crypto';
import { loadDeidentifier, patientDateShiftDays, shiftIsoDate } from '../../site-agent/data/deid-bridge.ts';
import { tempDir } from './helpers.ts';

const t = tempDir();
afterAll(t.cleanup);
const key = randomBytes(32);

describe('de-identifier bridge', () => {
  it('refuses (FEDLORA_ERR_DEID) when the module is missing or exports no deidentify', async () => {
    await expect(loadDeidentifier(key, 'placeholder', pathToFileURL(join(t.dir, 'missing.mjs')).href)).rejects.toThrow(/refusing to ingest without de-identification/);
    const empty = join(t.dir, 'empty.mjs');
    writeFileSync(empty, 'export const x = 1;\n');
    await expect(loadDeidentifier(key, 'placeholder', pathToFileURL(empty).href)).rejects.toMatchObject({ code: 'FEDLORA_ERR_DEID' });
  });

  it('passes mode, key, patient and known names to deidentify, and shifts dates per patient', async () => {
    const mod = join(t.dir, 'fake.mjs');
    writeFileSync(mod, 'export function deidentify(text, o) { return { text: `${o.mode}|${o.patientKey}|${o.knownNames.join("+")}|${Buffer.isBuffer(o.key)}|${text}`, spans: [] }; }\n');
    const d = await loadDeidentifier(key, 'pseudonym', pathToFileURL(mod).href);
    expect(d.text('hello', 'P1', ['Ann Lee']).text).toBe('pseudonym|P1|Ann Lee|true|hello');
    const s1 = patientDateShiftDays(key, 'P1');
    expect(d.shiftDate('2024-02-28', 'P1')).toBe(shiftIsoDate('2024-02-28', s1));
    expect(s1).not.toBe(0);
    expect(Math.abs(s1)).toBeLessThanOrEqual(365);
    // Different patients get different shifts (with overwhelming probability for 20 patients).
    expect(new Set(Array.from({ length: 20 }, (_, i) => patientDateShiftDays(key, `P${i}`))).size).toBeGreaterThan(10);
  });
});
