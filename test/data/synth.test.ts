import { describe, it, expect, afterAll } from 'vitest';
import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { generateSites } from '../../site-agent/data/index.ts';
import { DIAGNOSES, DEPARTMENTS } from '../../site-agent/data/synth/catalog.ts';
import { chineseId } from '../../site-agent/data/synth/generate.ts';
import { tempDir } from './helpers.ts';

const t = tempDir();
afterAll(t.cleanup);

const deptShare = (keys: string[], dept: number) => keys.filter((k) => DIAGNOSES.find((d) => d.key === k)!.dept === dept).length / keys.length;

describe('synthetic hospital generator', () => {
  it('is deterministic for a seed and differs across seeds', () => {
    const a = generateSites({ sites: 2, records: 40, seed: 9 });
    const b = generateSites({ sites: 2, records: 40, seed: 9 });
    const c = generateSites({ sites: 2, records: 40, seed: 10 });
    expect(a).toEqual(b);
    expect(JSON.stringify(a)).not.toEqual(JSON.stringify(c));
  });

  it('skew controls how non-IID sites are: site i mostly department i', () => {
    const skewed = generateSites({ sites: 5, records: 300, seed: 1, skew: 0.9 });
    const iid = generateSites({ sites: 5, records: 300, seed: 1, skew: 0 });
    for (let i = 0; i < 5; i++) {
      expect(deptShare(skewed[i].diagnosisKeys, i)).toBeGreaterThan(0.85);
      expect(deptShare(iid[i].diagnosisKeys, i)).toBeLessThan(0.35);
    }
    // Over all IID sites every diagnosis occurs.
    expect(new Set(iid.flatMap((s) => s.diagnosisKeys)).size).toBe(DIAGNOSES.length);
    expect(DIAGNOSES.length).toBeGreaterThanOrEqual(10);
    expect(new Set(DIAGNOSES.map((d) => d.dept)).size).toBe(DEPARTMENTS.length);
  });

  it('cases carry the patterns that point to their diagnosis', () => {
    const [s] = generateSites({ sites: 1, records: 400, seed: 3, lang: 'en', skew: 0 });
    s.records.forEach((r, i) => {
      const k = s.diagnosisKeys[i];
      if (k === 'ami') {
        expect(r.labs).toMatch(/Troponin I [\d.]+ ng\/mL \(H\)/);
        expect(r.chief_complaint).toMatch(/chest|diaphoresis|arm/);
      }
      if (k === 't2dm') expect(r.labs).toMatch(/HbA1c [\d.]+ % \(H\)/);
      if (k === 'pneumonia') expect(r.exam + r.labs).toMatch(/infiltrate|crackles|CRP/);
      if (k !== 'ami') expect(r.labs).not.toMatch(/Troponin/);
    });
  });

  it('plants identifiers in the free text and lists them', () => {
    const [s] = generateSites({ sites: 1, records: 50, seed: 4, lang: 'mixed' });
    const types = new Set(s.planted.map((p) => p.type));
    for (const ty of ['NAME', 'ID', 'PHONE', 'ADDRESS', 'DATE', 'MRN']) expect(types.has(ty as never)).toBe(true);
    for (const p of s.planted) expect(s.records[p.record].history).toContain(p.text);
    const zhIds = s.planted.filter((p) => p.type === 'ID' && /^\d{17}[\dX]$/.test(p.text));
    expect(zhIds.length).toBeGreaterThan(0);
    expect(new Set(s.records.map((r) => r.lang))).toEqual(new Set(['zh', 'en']));
  });

  it('Chinese ID numbers carry a valid check digit', () => {
    expect(chineseId('110105', new Date(Date.UTC(1949, 11, 31)), 2)).toBe('11010519491231002X');
  });

  it('writes records, planted-identifier lists and manifests for each format', () => {
    for (const format of ['csv', 'jsonl', 'fhir'] as const) {
      const out = join(t.dir, format);
      const sites = generateSites({ sites: 2, records: 5, seed: 1, format, out });
      const ext = { csv: 'csv', jsonl: 'jsonl', fhir: 'ndjson' }[format];
      for (const s of sites) {
        expect(s.file).toBe(join(out, s.name, `records.${ext}`));
        expect(existsSync(join(out, s.name, 'phi.jsonl'))).toBe(true);
        const m = JSON.parse(readFileSync(join(out, s.name, 'manifest.json'), 'utf8'));
        expect(m.records).toBe(5);
      }
      expect(JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8')).sites.length).toBe(2);
    }
  });
});
