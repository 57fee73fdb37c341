// The demo's evaluation parts, without the federation: the balanced consortium-wide test set, its
// reading at a site (file:line errors), items asked in the training prompt's words (cloze), the
// comparison rule, and the global column of the cross-site matrix.
import { describe, it, expect } from 'vitest';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateBalancedSet, writeBalancedSet } from '../../site-agent/data/synth/balanced-set.ts';
import { generateSites } from '../../site-agent/data/synth/generate.ts';
import { DIAGNOSES } from '../../site-agent/data/synth/catalog.ts';
import { readSharedSet, sharedChoiceItems } from '../../site-agent/data/dataset/shared-set.ts';
import { parseDataConfig } from '../../site-agent/data/index.ts';
import { buildComparison, pairedVerdict, verdictOf } from '../../cli/demo/comparison.ts';
import { globalColumn } from '../../coordinator/crosseval/global-column.ts';
import type { MetricRow } from '../../coordinator/store/store.ts';

const dir = mkdtempSync(join(tmpdir(), 'fedlora-demo-eval-'));

describe('consortium-wide balanced test set', () => {
  it('has the same number of cases of every diagnosis and no identifier', () => {
    const cases = generateBalancedSet({ perDiagnosis: 3, lang: 'mixed', seed: 8 });
    expect(cases).toHaveLength(3 * DIAGNOSES.length);
    for (const d of DIAGNOSES) expect(cases.filter((c) => c.icd10 === d.icd10)).toHaveLength(3);
    expect(new Set(cases.map((c) => c.lang))).toEqual(new Set(['en', 'zh']));
    // the identifiers a site's generator plants (names, IDs, phones) live in the history, left out here
    const planted = generateSites({ sites: 1, records: 40, seed: 8 })[0].planted.map((p) => p.text);
    const text = JSON.stringify(cases);
    for (const p of planted) expect(text.includes(p)).toBe(false);
    expect(Object.keys(cases[0]).sort()).toEqual(['age', 'chief_complaint', 'department', 'diagnosis', 'exam', 'icd10', 'labs', 'lang', 'sex']);
  });

  it('gives unequal hospitals when asked for one count per site', () => {
    const out = join(dir, 'unequal');
    expect(generateSites({ sites: 3, records: [20, 20, 5], seed: 1, format: 'jsonl', out }).map((s) => s.records.length)).toEqual([20, 20, 5]);
    expect([1, 2, 3].map((k) => JSON.parse(readFileSync(join(out, `site-${k}`, 'manifest.json'), 'utf8')).records)).toEqual([20, 20, 5]);
    expect(() => generateSites({ sites: 2, records: [20], seed: 1 })).toThrow(/records for site 2/);
  });

  it('becomes cloze items at a site: the training prompt, options from the set\'s diagnoses, the answer among them', () => {
    const file = join(dir, 'set.jsonl');
    writeBalancedSet(file, generateBalancedSet({ perDiagnosis: 2, lang: 'en', seed: 3 }));
    const cfg = parseDataConfig({ prompt: { userTemplate: 'Chief complaint: {{chiefComplaint}}\nExamination: {{exam}}', assistantTemplate: '{{diagnosis}}' }, choices: { format: 'cloze' } });
    const items = sharedChoiceItems(readSharedSet(file), cfg, ['chiefComplaint', 'exam', 'diagnosis']);
    expect(items).toHaveLength(2 * DIAGNOSES.length);
    for (const it of items) {
      expect(it.options).toHaveLength(4);
      expect(it.options[it.answer]).toBe(it.label);
      const user = it.prompt.find((m) => m.role === 'user')!.content;
      expect(user.startsWith('Chief complaint: ')).toBe(true);
      expect(user).not.toContain('Which is the most likely diagnosis?');
      expect(user).not.toContain(it.label);
    }
    const listed = sharedChoiceItems(readSharedSet(file), parseDataConfig({}), ['chiefComplaint', 'exam', 'diagnosis']);
    expect(listed[0].prompt.find((m) => m.role === 'user')!.content).toContain('Which is the most likely diagnosis?');
  });

  it('names the file, line and field of a bad case', () => {
    const file = join(dir, 'bad.jsonl');
    writeFileSync(file, '{"lang":"en","diagnosis":"Migraine"}\n{"lang":"en"}\n');
    expect(() => readSharedSet(file)).toThrow(`${file}:2: field diagnosis is missing`);
    writeFileSync(file, '{"lang":"fr","diagnosis":"Migraine"}\n');
    expect(() => readSharedSet(file)).toThrow(`${file}:1: field lang`);
  });
});

describe('comparison and the global column', () => {
  const e = (value: number, lo: number, hi: number) => ({ value, ci_low: lo, ci_high: hi, count: 30 });
  it('calls a side better only when its interval lies wholly above the other\'s', () => {
    expect(verdictOf(e(0.8, 0.7, 0.9), e(0.5, 0.4, 0.65))).toBe('global better');
    expect(verdictOf(e(0.5, 0.4, 0.65), e(0.8, 0.7, 0.9))).toBe('local-only better');
    expect(verdictOf(e(0.8, 0.6, 0.9), e(0.7, 0.55, 0.85))).toBe('no clear difference');
    expect(verdictOf(e(0.8, 0.6, 0.9), null)).toBeNull();
  });

  it('reads the paired difference global − local-only: better when its interval excludes 0', () => {
    expect(pairedVerdict(e(0.1, 0.02, 0.18))).toBe('global better');
    expect(pairedVerdict(e(-0.1, -0.2, -0.01))).toBe('local-only better');
    expect(pairedVerdict(e(0.05, -0.01, 0.12))).toBe('no clear difference');
    expect(pairedVerdict(e(0.05, 0, 0.12))).toBe('no clear difference');
    expect(pairedVerdict({ value: 0.1, ci_low: null, ci_high: null, count: 30 })).toBeNull();
    expect(pairedVerdict(null)).toBeNull();
  });

  it('builds each row from the site\'s paired difference where there is one, else from the separate intervals; states chance', () => {
    // overlapping separate intervals, the paired difference above 0 (a lead on the same items)
    const fig = (paired: boolean) => ({
      global: { accuracy: e(0.6, 0.5, 0.7), ...(paired ? { accuracy_minus_local: e(0.1, 0.03, 0.17) } : {}) },
      local: { accuracy: e(0.5, 0.4, 0.6) },
    });
    const c = buildComparison({
      round: 3, metric: 'accuracy', chance: 0.25, sites: [{ site: 'a', note: 'mostly X' }, { site: 'b', note: 'small' }],
      sets: [{ eval_set: 'held-out', figures: { a: fig(true), b: fig(false) }, consortium: { global: { accuracy: e(0.2, 0.1, 0.3), accuracy_minus_local: e(-0.2, -0.3, -0.1) }, local: { accuracy: e(0.4, 0.3, 0.5) } } }],
    });
    expect(c.chance).toBe(0.25);
    expect(c.rule).toContain('paired difference');
    const [a, b] = c.rows;
    expect(a).toMatchObject({ site: 'a', verdict: 'global better', basis: 'paired difference', global_above_chance: true, paired: { value: 0.1, ci_low: 0.03, ci_high: 0.17 } });
    expect(a.difference).toBeCloseTo(0.1, 12);
    expect(b).toMatchObject({ site: 'b', verdict: 'no clear difference', basis: 'separate intervals', paired: null });
    expect(c.consortium[0]).toMatchObject({ verdict: 'local-only better', basis: 'paired difference', global_above_chance: false });
  });

  it('takes each data site\'s newest whole-set global figure of the matrix\'s version', () => {
    let id = 0;
    const row = (site: string, round: number, value: number, extra: Partial<MetricRow> = {}): MetricRow => ({
      id: ++id, job_id: 'j', round, site_id: site, kind: 'global', metric: 'accuracy', value, count: 10, model_owner: '', adapter_version: round, phase: 'eval', created_ms: 0, task_id: 't',
      subset: '', eval_set: '', ci_low: value - 0.1, ci_high: value + 0.1, ci_resamples: 1000, ...extra,
    });
    const rows = [row('a', 2, 0.5), row('a', 3, 0.6), row('a', 3, 0.7), row('b', 3, 0.4, { subset: 'sex=F' }), row('b', 3, 0.9, { eval_set: 'shared:x' })];
    const g = globalColumn(rows, ['a', 'b'], 3, 'accuracy');
    expect(g.values).toEqual([0.7, null]);
    expect(g.cells).toEqual([{ data_site: 'a', value: 0.7, count: 10, ci_low: 0.7 - 0.1, ci_high: 0.7 + 0.1, round: 3 }]);
    expect(globalColumn(rows, ['a'], null, 'accuracy').values).toEqual([null]);
  });
});
