// The site's diagnosis code list (ICD-10 codes and names) that doctors pick labels from: a CSV
// the site provides (header `code` and `name`, `name_zh` and/or `name_en`; read with the ingest
// CSV parser, so quoting, BOM and GB18030 exports work as for records), or the small built-in
// sample beside this file. Typed diagnoses are matched to a code by name, so a label typed as
// "心房颤动" and one picked as I48.91 agree.
import { join } from 'node:path';
import { fail } from '../../../shared/errors.ts';
import { readCsv } from '../ingest/csv.ts';
import type { TextEncoding } from '../ingest/lines.ts';
import { diagnosisText, normalizeCode } from './keys.ts';

const SAMPLE_CODE_LIST = join(import.meta.dirname, 'icd10-sample.csv');

export interface CodeEntry {
  code: string;
  zh: string | null;
  en: string | null;
}

export interface CodeList {
  /** The file it was read from, or the built-in sample's path. */
  source: string;
  size: number;
  /** Every code, in the file's order. */
  entries: readonly CodeEntry[];
  byCode(code: string): CodeEntry | undefined;
  /** The code whose Chinese or English name is `name` (after normalisation), if any. */
  codeForName(name: string): string | undefined;
  /** Codes matching what a doctor typed: the code's start first, then names that start with
   *  it, then names containing it. */
  search(query: string, limit: number): CodeEntry[];
}

const NAME_COLUMNS = { name: 'any', name_zh: 'zh', name_en: 'en' } as const;

/** Read a code list CSV; errors name the file and line. */
export async function loadCodeList(path: string | null, o: { encoding?: TextEncoding } = {}): Promise<CodeList> {
  const file = path ?? SAMPLE_CODE_LIST;
  const entries: CodeEntry[] = [];
  let cols: { code: number; zh: number; en: number; any: number } | null = null;
  try {
    for await (const rec of readCsv(file, { delimiter: ',', quote: '"', maxRecordBytes: 64 * 1024, encoding: o.encoding })) {
      if (rec.error) throw fail('FEDLORA_ERR_CODE_LIST', `${file}: line ${rec.startLine}: ${rec.error.detail}`);
      const f = rec.fields.map((x) => x.trim());
      if (!cols) {
        const head = f.map((h) => h.toLowerCase());
        const at = (n: string) => head.indexOf(n);
        cols = { code: at('code'), zh: at('name_zh'), en: at('name_en'), any: at('name') };
        if (cols.code < 0) throw fail('FEDLORA_ERR_CODE_LIST', `${file}: line ${rec.startLine}: the header has no "code" column (found: ${f.join(', ')})`);
        if (cols.zh < 0 && cols.en < 0 && cols.any < 0) throw fail('FEDLORA_ERR_CODE_LIST', `${file}: line ${rec.startLine}: the header has none of ${Object.keys(NAME_COLUMNS).join(', ')}`);
        continue;
      }
      const code = f[cols.code] ?? '';
      if (!code) throw fail('FEDLORA_ERR_CODE_LIST', `${file}: line ${rec.startLine}: empty code`);
      const any = cols.any >= 0 ? f[cols.any] || null : null;
      const zh = (cols.zh >= 0 ? f[cols.zh] || null : null) ?? (any && /\p{Script=Han}/u.test(any) ? any : null);
      const en = (cols.en >= 0 ? f[cols.en] || null : null) ?? (any && !/\p{Script=Han}/u.test(any) ? any : null);
      if (!zh && !en) throw fail('FEDLORA_ERR_CODE_LIST', `${file}: line ${rec.startLine}: code ${code} has no name`);
      entries.push({ code: normalizeCode(code), zh, en });
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw fail('FEDLORA_ERR_CODE_LIST', `${file}: no such file (serve.workbench.code_list)`);
    throw e;
  }
  if (entries.length === 0) throw fail('FEDLORA_ERR_CODE_LIST', `${file}: no codes in the file`);
  return codeListOf(file, entries);
}

function codeListOf(source: string, entries: CodeEntry[]): CodeList {
  const byCode = new Map<string, CodeEntry>();
  const byName = new Map<string, string>();
  for (const e of entries) {
    byCode.set(e.code, e);
    for (const n of [e.zh, e.en]) if (n && !byName.has(diagnosisText(n))) byName.set(diagnosisText(n), e.code);
  }
  const rows = [...byCode.values()].map((e) => ({ e, code: e.code.toLowerCase(), names: [e.zh, e.en].filter((n): n is string => !!n).map((n) => n.toLowerCase()) }));
  return {
    source,
    size: byCode.size,
    entries: [...byCode.values()],
    byCode: (code) => byCode.get(normalizeCode(code)),
    codeForName: (name) => byName.get(diagnosisText(name)),
    search(query, limit) {
      const q = query.trim().toLowerCase();
      if (!q) return [];
      const rank = (r: (typeof rows)[number]): number => {
        if (r.code === q) return 0;
        if (r.code.startsWith(q)) return 1;
        if (r.names.some((n) => n.startsWith(q))) return 2;
        if (r.names.some((n) => n.includes(q))) return 3;
        return -1;
      };
      return rows.map((r) => ({ r, k: rank(r) })).filter((x) => x.k >= 0).sort((a, b) => a.k - b.k || (a.r.code < b.r.code ? -1 : 1)).slice(0, limit).map((x) => x.r.e);
    },
  };
}
