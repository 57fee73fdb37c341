// Vital signs and lab values from a note's text (after cleaning): every field name of the
// catalogue is looked for in one pass, longest name first (so 脑钠肽 is BNP, not 钠 = sodium);
// after a name, a short gap (no digits, no sentence end, no comparator) and a number with its
// unit. The first plausible value of a field wins; implausible ones are counted, not taken.
// Values written as a bound (<0.01, >600), targets (目标, target), urine or CSF values and
// other quantities named alike (肌酐清除率, NT-proBNP) are not measurements of the field.
import { BLOCK_AFTER, BLOCK_BEFORE, BP_NAMES, FIELDS, FIELD_KEYS, FIELD_NAMES, type FieldKey, type FieldSpec } from './catalog.ts';

export interface ValueResult {
  values: Partial<Record<FieldKey, number>>;
  /** Fields mentioned with a number that is implausible in every unit reading. */
  implausible: FieldKey[];
}

const CJK = /[\u3400-\u9fff]/;
const NUMBER = '(\\d{1,3}(?:,\\d{3})+(?![\\d.])|\\d+(?:\\.\\d+)?)';
// Between a name and its number: no digit, sentence end or comparator, at most 16 characters.
const GAP = '([^\\d。；;，,!?！？\\n<>≤≥＜＞]{0,16}?)';
// Gaps that say the number is not this measurement (a target, a missing result).
const GAP_BLOCK = /target|goal|目标|控制|以下|以上|unknown|未测|未查|待回|not done|pending|previous|上次|clearance|清除率/i;

interface NameEntry { field: FieldKey | 'bp'; src: string; exact: boolean }

function nameEntries(): NameEntry[] {
  const out: NameEntry[] = BP_NAMES.map((n) => ({ field: 'bp' as const, src: n.replace(/[/]/g, '\\/'), exact: false }));
  for (const f of FIELD_KEYS) for (const n of FIELD_NAMES[f]) out.push({ field: f, src: n.startsWith('=') ? n.slice(1) : n, exact: n.startsWith('=') });
  // Longest first: the alternation takes the first that matches at a position.
  return out.sort((a, b) => b.src.length - a.src.length);
}

const ENTRIES = nameEntries();
// A name is Latin or Chinese by its first written character (lookarounds aside: "R(?=…次)" is Latin).
const isChinese = (src: string) => CJK.test(/[A-Za-z\u3400-\u9fff]/.exec(src.replace(/\(\?<?[=!][^)]*\)/g, ''))?.[0] ?? '');
const wrap = (e: NameEntry) => (isChinese(e.src) ? `(?:${e.src})` : `(?<![A-Za-z])(?:${e.src})(?![A-Za-z])`);
// One scan without capture groups (a hundred groups would make every match costly in a long
// note); the entry that matched is then the first whose sticky copy matches at that position,
// which is the alternative the scan took.
const NAME_RE = new RegExp(ENTRIES.map(wrap).join('|'), 'gi');
const STICKY = ENTRIES.map((e) => new RegExp(wrap(e), 'iy'));
// Names that must appear as written (case-sensitive), checked at the match's position.
const EXACT = ENTRIES.map((e) => (e.exact ? new RegExp(wrap(e), 'y') : null));

function entryAt(text: string, at: number): number {
  for (let i = 0; i < STICKY.length; i++) {
    STICKY[i].lastIndex = at;
    if (STICKY[i].test(text)) return i;
  }
  throw new Error(`no name entry matches at ${at}`); // unreachable: the scan matched one
}

// Compiled once: a long note has hundreds of name mentions.
const NUM_AFTER = new RegExp(`^${GAP}${NUMBER}`);
const BP_AFTER = new RegExp(`^${GAP}(\\d{1,3}(?:\\.\\d)?)\\s*(?:/|／|over)\\s*(\\d{1,3}(?:\\.\\d)?)\\s*(mm\\s*hg|毫米汞柱|kpa)?`, 'i');
const UNIT_RES = new Map<FieldKey, { canonical: RegExp; alts: RegExp[] }>(
  FIELD_KEYS.map((k) => [k, { canonical: new RegExp(`^(?:${FIELDS[k].canonicalRe})`, 'i'), alts: FIELDS[k].units.map((u) => new RegExp(`^(?:${u.re})`, 'i')) }]),
);

function parseNumber(s: string): number {
  return Number(s.replace(/,/g, ''));
}

const inRange = (v: number, [lo, hi]: [number, number]) => Number.isFinite(v) && v >= lo && v <= hi;

/** The canonical value of a number with its (possibly absent) unit text, or null when no reading is plausible. */
function canonical(spec: FieldSpec, v: number, unitText: string): { value: number | null; unitKnown: boolean } {
  const u = unitText.toLowerCase();
  if (u) {
    const res = UNIT_RES.get(spec.key)!;
    if (res.canonical.test(u)) return { value: inRange(v, spec.plausible) ? v : null, unitKnown: true };
    for (const [j, alt] of spec.units.entries()) {
      if (res.alts[j].test(u)) {
        const c = alt.toCanonical(v);
        return { value: inRange(c, spec.plausible) ? c : null, unitKnown: true };
      }
    }
  }
  // No (known) unit: the canonical reading if plausible, else the single other plausible one.
  if (inRange(v, spec.plausible)) return { value: v, unitKnown: false };
  const alts = spec.units.map((a) => a.toCanonical(v)).filter((c) => inRange(c, spec.plausible));
  return { value: alts.length === 1 ? alts[0] : null, unitKnown: false };
}

const round = (v: number) => Math.round(v * 1e4) / 1e4;

export function extractValues(text: string): ValueResult {
  const values: Partial<Record<FieldKey, number>> = {};
  const implausible = new Set<FieldKey>();
  NAME_RE.lastIndex = 0;
  for (let m = NAME_RE.exec(text); m; m = NAME_RE.exec(text)) {
    const i = entryAt(text, m.index);
    const entry = ENTRIES[i];
    // A field already read: later mentions change nothing.
    if (entry.field === 'bp' ? values.sbp !== undefined : values[entry.field] !== undefined) continue;
    const exact = EXACT[i];
    if (exact) {
      exact.lastIndex = m.index;
      if (!exact.test(text)) continue;
    }
    const start = m.index;
    const end = start + m[0].length;
    if (BLOCK_BEFORE.test(text.slice(Math.max(0, start - 8), start)) || BLOCK_AFTER.test(text.slice(end, end + 12))) continue;
    const rest = text.slice(end, end + 64);
    if (entry.field === 'bp') {
      const bp = BP_AFTER.exec(rest);
      if (!bp || GAP_BLOCK.test(bp[1])) continue;
      const k = bp[4] && /kpa/i.test(bp[4]) ? 7.50062 : 1;
      const sys = parseNumber(bp[2]) * k;
      const dia = parseNumber(bp[3]) * k;
      if (inRange(sys, FIELDS.sbp.plausible) && inRange(dia, FIELDS.dbp.plausible) && sys > dia) {
        values.sbp = round(sys);
        values.dbp = round(dia);
      } else implausible.add('sbp');
      continue;
    }
    const field = entry.field;
    const num = NUM_AFTER.exec(rest);
    if (!num || GAP_BLOCK.test(num[1])) continue;
    const { value } = canonical(FIELDS[field], parseNumber(num[2]), rest.slice(num[0].length).trimStart().slice(0, 24));
    if (value === null) implausible.add(field);
    else values[field] = round(value);
  }
  for (const f of Object.keys(values) as FieldKey[]) implausible.delete(f);
  return { values, implausible: [...implausible] };
}
