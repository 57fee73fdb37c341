// A consortium-wide balanced test set: the same number of cases of every diagnosis of the
// catalogue, from patients of no hospital, with no identifier in any field (the history, where
// the generator plants them, is left out). Every site evaluates on the same file, so the global
// adapter and each hospital's local-only one are compared on every specialty, including those a
// hospital rarely sees. Deterministic for a seed; written as JSONL read by
// site-agent/data/dataset/shared-set.ts.

import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { DIAGNOSES, type Lang } from './catalog.ts';
import { makeCase, type Patient } from './generate.ts';
import { mulberry32 } from '../../../shared/prng.ts';

/** One case of the shared set: the fields a site's prompt may use, its label and subgroups. */
export interface SharedCase {
  lang: Lang;
  department: string;
  chief_complaint: string;
  exam: string;
  labs: string;
  diagnosis: string;
  icd10: string;
  sex: 'F' | 'M';
  age: string;
}

export interface BalancedSetOptions {
  perDiagnosis: number;
  lang: 'zh' | 'en' | 'mixed';
  seed: number;
}

export function generateBalancedSet(o: BalancedSetOptions): SharedCase[] {
  const r = mulberry32(o.seed * 1000 + 104_729);
  const pick = <T>(a: T[]): T => a[Math.floor(r() * a.length)];
  const int = (lo: number, hi: number): number => lo + Math.floor(r() * (hi - lo + 1));
  const out: SharedCase[] = [];
  for (const dx of DIAGNOSES) {
    for (let i = 0; i < o.perDiagnosis; i++) {
      const lang: Lang = o.lang === 'mixed' ? (i % 2 === 0 ? 'en' : 'zh') : o.lang;
      // makeCase writes identifiers into the history only; these patients have placeholders for them.
      const p: Patient = { mrn: '-', name: '-', nationalId: '-', phone: '-', address: '-', birth: new Date(Date.UTC(int(1940, 2000), 0, 1)), sex: r() < 0.5 ? 'M' : 'F', lang };
      const rec = makeCase(p, dx, r, pick, int, out.length, []);
      out.push({ lang, department: rec.department, chief_complaint: rec.chief_complaint, exam: rec.exam, labs: rec.labs, diagnosis: rec.diagnosis, icd10: rec.icd10, sex: rec.sex, age: rec.age });
    }
  }
  return out;
}

export function writeBalancedSet(file: string, cases: SharedCase[]): void {
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, cases.map((c) => JSON.stringify(c)).join('\n') + '\n');
}
