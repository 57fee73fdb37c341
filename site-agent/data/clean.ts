// Text cleaning before de-identification and hashing: Unicode normalisation, whitespace,
// abbreviations. Cleaning first means two exports of the same case that differ only in
// full-width digits or spacing hash to the same id (deduplicated).

import type { DataConfig } from './config-schema.ts';

const CJK = /[\u3400-\u9fff\uf900-\ufaff]/;
// Full-width punctuation that belongs in Chinese prose; NFKC would turn it into ASCII.
const KEEP_FULLWIDTH_RE = /([，：；（）！？])/;

/** NFKC (full-width letters/digits → ASCII, compatibility forms → canonical), but Chinese
 *  punctuation stays full-width in text that contains Chinese. */
export function normalizeUnicode(s: string): string {
  if (!CJK.test(s)) return s.normalize('NFKC');
  // Odd indices of the split are the kept punctuation marks.
  return s
    .split(KEEP_FULLWIDTH_RE)
    .map((part, i) => (i % 2 === 1 ? part : part.normalize('NFKC')))
    .join('');
}

/** Collapse runs of spaces/tabs, drop control characters, trim lines, at most one blank line. */
export function collapseWhitespace(s: string): string {
  return s
    .replace(/\r\n?/g, '\n')
    // eslint-disable-next-line no-control-regex
    .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f\u200b\ufeff]/g, '')
    .replace(/[ \t\u00a0\u3000]+/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .join('\n')
    .replace(/\n{3,}/g, '\n\n')
    .trim();
}

const escapeRe = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** One-pass replacer for an abbreviation table: longest match first, so "高血压病" wins over a
 *  shorter key, and a replacement is never rescanned (no cascades). Latin keys match whole
 *  words; a lower-case key also matches its UPPER and Capitalised forms ("bid", "BID"), an
 *  upper-case acronym ("MI") only itself, so ordinary words are not rewritten. CJK keys match anywhere. */
export function makeAbbreviationExpander(table: Record<string, string>): (s: string) => string {
  const keys = Object.keys(table).filter((k) => k.length > 0).sort((a, b) => b.length - a.length);
  if (keys.length === 0) return (s) => s;
  const lookup = new Map<string, string>();
  const alts: string[] = [];
  // An expansion that contains its own abbreviation (脑梗 → 脑梗死, 房颤 → 心房颤动) must not be
  // expanded again when the text already has the full form: the full forms match as themselves.
  const protect = Object.values(table).filter((v) => CJK.test(v) && keys.some((k) => k !== v && v.includes(k)));
  for (const k of [...keys, ...protect].sort((a, b) => b.length - a.length)) {
    if (protect.includes(k) && !(k in table)) {
      if (!lookup.has(k)) {
        lookup.set(k, k);
        alts.push(escapeRe(k));
      }
      continue;
    }
    const forms = k === k.toLowerCase() ? [k, k.toUpperCase(), k[0].toUpperCase() + k.slice(1)] : [k];
    for (const f of new Set(forms)) {
      if (lookup.has(f)) continue;
      lookup.set(f, table[k]);
      alts.push(CJK.test(f) ? escapeRe(f) : `(?<![A-Za-z0-9.])${escapeRe(f)}(?![A-Za-z0-9])`);
    }
  }
  const re = new RegExp(alts.join('|'), 'g');
  return (s) => s.replace(re, (m) => lookup.get(m) ?? m);
}

export interface Cleaner {
  (s: string): string;
}

export function makeCleaner(cfg: DataConfig['cleaning']): Cleaner {
  const expand = makeAbbreviationExpander({ ...cfg.abbreviations, ...cfg.extraAbbreviations });
  return (s: string) => {
    let t = s;
    if (cfg.nfkc) t = normalizeUnicode(t);
    if (cfg.collapseWhitespace) t = collapseWhitespace(t);
    return expand(t);
  };
}

export const hasCjk = (s: string): boolean => CJK.test(s);
