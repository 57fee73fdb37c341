// Span-level evaluation of the de-identifier on the generated labelled set (Chinese and
// English notes, every PHI type planted with exact gold spans, clinical distractors that must
// survive). Prints a recall/precision table; asserts recall ≥ 0.98 and precision ≥ 0.95.
import { describe, it, expect } from 'vitest';
import { deidentify, PHI_TYPES } from '../../site-agent/data/deid/index.ts';
import { generateLabelledSet, type LabelledDoc } from '../../site-agent/data/deid/labelled-set.ts';
import type { PhiSpan, PhiType } from '../../site-agent/data/types.ts';
import { generateSites } from '../../site-agent/data/synth/generate.ts';

const KEY = Buffer.alloc(32, 3);
// Two seeds: the same templates with different identifiers, names, formats and positions.
const docs: LabelledDoc[] = [...generateLabelledSet(20240501, 240), ...generateLabelledSet(7, 120)];

interface Tally { gold: number; pred: number; exact: number; exactTyped: number; covered: number; predHit: number; predHitTyped: number }
const tally = (): Tally => ({ gold: 0, pred: 0, exact: 0, exactTyped: 0, covered: 0, predHit: 0, predHitTyped: 0 });
const overlaps = (a: { start: number; end: number }, b: { start: number; end: number }) => a.start < b.end && b.start < a.end;

const all = tally();
const per = new Map<PhiType, Tally>(PHI_TYPES.map((t) => [t, tally()]));
const misses: string[] = [];
const falsePositives: string[] = [];
const eaten: string[] = [];
let distractors = 0;
const outputs: { doc: LabelledDoc; text: string; spans: PhiSpan[] }[] = [];

for (const doc of docs) {
  for (const mode of ['placeholder', 'pseudonym'] as const) {
    const r = deidentify(doc.text, { mode, key: KEY, patientKey: doc.patientKey, knownNames: doc.knownNames });
    if (mode === 'pseudonym') {
      outputs.push({ doc, ...r });
      continue; // spans are identical in both modes (checked below); score once
    }
    for (const g of doc.gold) {
      const t = per.get(g.type)!;
      all.gold++, t.gold++;
      const same = r.spans.find((p) => p.start === g.start && p.end === g.end);
      if (same) {
        all.exact++, t.exact++;
        if (same.type === g.type) all.exactTyped++, t.exactTyped++;
      }
      if (r.spans.some((p) => p.start <= g.start && p.end >= g.end)) all.covered++, t.covered++;
      else misses.push(`${g.type} ${JSON.stringify(g.text)} in ${JSON.stringify(doc.text)}`);
    }
    for (const p of r.spans) {
      const t = per.get(p.type)!;
      all.pred++, t.pred++;
      const hit = doc.gold.find((g) => overlaps(g, p));
      if (hit) {
        all.predHit++, t.predHit++;
        if (hit.type === p.type) all.predHitTyped++, t.predHitTyped++;
      } else falsePositives.push(`${p.type} ${JSON.stringify(p.text)} in ${JSON.stringify(doc.text)}`);
    }
    for (const d of doc.distractors) {
      distractors++;
      if (r.spans.some((p) => overlaps(p, d))) eaten.push(`${JSON.stringify(d.text)} in ${JSON.stringify(doc.text)}`);
    }
  }
}

const f = (n: number, d: number) => (d === 0 ? '   -  ' : (n / d).toFixed(4));
function printTable(): void {
  const rows = [['type', 'gold', 'pred', 'recall(exact)', 'recall(covered)', 'precision', 'typed R', 'typed P']];
  for (const [type, t] of [['ALL (type-agnostic)', all] as const, ...per.entries()]) {
    rows.push([type, String(t.gold), String(t.pred), f(t.exact, t.gold), f(t.covered, t.gold), f(t.predHit, t.pred), f(t.exactTyped, t.gold), f(t.predHitTyped, t.pred)]);
  }
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  console.log(
    `de-identification on ${docs.length} labelled notes (${docs.filter((d) => d.lang === 'zh').length} zh, ${docs.filter((d) => d.lang === 'en').length} en), ${distractors} clinical distractors\n` +
      rows.map((r) => r.map((c, i) => c.padEnd(w[i])).join('  ')).join('\n'),
  );
  if (misses.length) console.log('missed:\n  ' + misses.slice(0, 20).join('\n  '));
  if (falsePositives.length) console.log('false positives:\n  ' + falsePositives.slice(0, 20).join('\n  '));
}

describe('de-identifier on the labelled evaluation set', () => {
  it('the set is large, bilingual and plants every PHI type', () => {
    printTable();
    expect(all.gold).toBeGreaterThanOrEqual(200);
    for (const [type, t] of per) expect(t.gold, `planted ${type}`).toBeGreaterThanOrEqual(15);
    expect(docs.some((d) => d.lang === 'zh') && docs.some((d) => d.lang === 'en')).toBe(true);
    // gold spans really are where they say
    for (const d of docs) for (const g of d.gold) expect(d.text.slice(g.start, g.end)).toBe(g.text);
  });

  it('span-level recall ≥ 0.98 and precision ≥ 0.95 (type-agnostic, exact spans)', () => {
    expect(all.exact / all.gold).toBeGreaterThanOrEqual(0.98);
    expect(all.covered / all.gold).toBeGreaterThanOrEqual(0.98);
    expect(all.predHit / all.pred).toBeGreaterThanOrEqual(0.95);
  });

  it('per type: recall ≥ 0.95 and precision ≥ 0.95 with the right type', () => {
    for (const [type, t] of per) {
      expect(t.exactTyped / t.gold, `recall ${type}`).toBeGreaterThanOrEqual(0.95);
      if (t.pred > 0) expect(t.predHitTyped / t.pred, `precision ${type}`).toBeGreaterThanOrEqual(0.95);
    }
  });

  it('every planted clinical distractor survives verbatim', () => {
    expect(eaten).toEqual([]);
    // and literally appears in the de-identified text, in order
    for (const { doc, text } of outputs) {
      let at = 0;
      for (const d of doc.distractors) {
        const i = text.indexOf(d.text, at);
        expect(i, `${d.text} in ${text}`).toBeGreaterThanOrEqual(0);
        at = i + d.text.length;
      }
    }
  });

  it('no planted identifier text survives in the output (both modes)', () => {
    for (const { doc, text } of outputs) {
      for (const g of doc.gold) {
        // Very short identifiers (2-char names, bed numbers, 5/2) recur by chance in other text.
        if (g.text.length < 5 && g.type !== 'ZIP') continue;
        if (g.type === 'AGE') continue; // "90" is the start of its own replacement "90+" (checked in deid.test.ts)
        expect(text.includes(g.text), `${g.type} ${g.text} left in ${text}`).toBe(false);
      }
    }
  });

  it('cross-check on the synthetic generator (written independently): every planted identifier is removed, clinical fields untouched', () => {
    const sites = generateSites({ sites: 2, records: 60, lang: 'mixed', seed: 11 });
    const fields = ['chief_complaint', 'history', 'exam', 'labs', 'diagnosis', 'treatment'] as const;
    let planted = 0;
    for (const site of sites) {
      for (const [i, rec] of site.records.entries()) {
        const out = fields.map((f) => deidentify(rec[f], { mode: 'placeholder', key: KEY, patientKey: rec.patient_id, knownNames: [rec.patient_name] }));
        const text = out.map((o) => o.text).join('\n');
        for (const p of site.planted.filter((x) => x.record === i)) {
          planted++;
          expect(text.includes(p.text), `${p.type} ${p.text}`).toBe(false);
        }
        for (const [k, o] of out.entries()) if (fields[k] !== 'history') expect(o.spans, `${fields[k]}: ${rec[fields[k]]}`).toEqual([]);
      }
    }
    console.log(`synthetic generator cross-check: ${planted} planted identifiers, all removed`);
    expect(planted).toBeGreaterThan(300);
  });
});
