// `fedlora deid`: de-identify a JSONL or text file with the site's de-identifier, streaming
// line by line, and write a JSON report of PHI counts by type.
//
// Malformed JSONL lines: the run CONTINUES (every valid line is still de-identified and
// written), the bad line is never written (its text cannot be trusted to be cleaned), its
// line number goes into the report and to stderr, and the command then FAILS with exit code 2
// (FEDLORA_ERR_INGEST) so that scripts notice.

import { createReadStream, createWriteStream, existsSync, readFileSync, statSync, writeFileSync, chmodSync, mkdirSync, renameSync } from 'node:fs';
import { randomBytes, createHmac } from 'node:crypto';
import { dirname } from 'node:path';
import { createInterface } from 'node:readline';
import { once } from 'node:events';
import type { CliGroups } from '../groups.ts';
import { fail } from '../../shared/errors.ts';
import { deidentify, deidentifyValue, collectNames, emptyCounts, countSpans, type DeidReport } from '../../site-agent/data/deid/index.ts';

/** Read a 64-hex-character key, or create one (0600) when the file does not exist. */
export function loadOrCreateDeidKey(path: string): { key: Buffer; created: boolean } {
  if (!existsSync(path)) {
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, randomBytes(32).toString('hex') + '\n', { mode: 0o600, flag: 'wx' });
    chmodSync(path, 0o600);
    return { key: Buffer.from(readFileSync(path, 'utf8').trim(), 'hex'), created: true };
  }
  const mode = statSync(path).mode & 0o777;
  if (mode & 0o077) throw fail('FEDLORA_ERR_CONFIG', `${path}: de-identification key is accessible to group/others (mode ${mode.toString(8)}); run chmod 600 ${path}`);
  const hex = readFileSync(path, 'utf8').trim();
  if (!/^[0-9a-f]{64}$/i.test(hex)) throw fail('FEDLORA_ERR_CONFIG', `${path}: de-identification key must be 64 hex characters (32 bytes)`);
  return { key: Buffer.from(hex, 'hex'), created: false };
}

const PATIENT_KEYS = ['patientId', 'patient_id', 'patientKey', 'patient_key', 'mrn', 'MRN', 'subjectId'];

/** The patient a JSON record belongs to, as a keyed pseudonym (never the raw id). */
function patientOf(obj: unknown, key: Buffer, fallback: string): string {
  if (obj && typeof obj === 'object' && !Array.isArray(obj)) {
    for (const k of PATIENT_KEYS) {
      const v = (obj as Record<string, unknown>)[k];
      if (typeof v === 'string' || typeof v === 'number') return createHmac('sha256', key).update('fedlora/patient\0' + String(v)).digest('hex').slice(0, 20);
    }
  }
  return fallback;
}

export interface DeidFileOptions {
  input: string;
  output: string;
  format: 'jsonl' | 'txt';
  mode: 'placeholder' | 'pseudonym';
  key: Buffer;
  /** Patient for txt files (whole file is one patient); JSONL records carry their own. */
  patient?: string;
}

/** Stream `input` → `output` (written to a temp file, renamed when complete). */
export async function deidFile(o: DeidFileOptions): Promise<DeidReport> {
  if (!existsSync(o.input)) throw fail('FEDLORA_ERR_NOT_FOUND', `${o.input}: input file not found`);
  const report: DeidReport = { input: o.input, output: o.output, format: o.format, mode: o.mode, records: 0, strings: 0, spans: 0, byType: emptyCounts(), malformed: [] };
  const tmp = `${o.output}.partial`;
  const out = createWriteStream(tmp, { encoding: 'utf8', mode: 0o600 });
  const write = async (s: string) => {
    if (!out.write(s)) await once(out, 'drain');
  };
  const rl = createInterface({ input: createReadStream(o.input, { encoding: 'utf8' }), crlfDelay: Infinity });
  const fallbackPatient = o.patient ?? '';
  let lineNo = 0;
  for await (const line of rl) {
    lineNo++;
    if (o.format === 'txt') {
      const r = deidentify(line, { mode: o.mode, key: o.key, patientKey: fallbackPatient });
      countSpans(r.spans, report.byType);
      report.strings++;
      report.records++;
      await write(r.text + '\n');
      continue;
    }
    if (line.trim() === '') continue;
    let obj: unknown;
    try {
      obj = JSON.parse(line);
    } catch (e) {
      // JSON.parse messages quote the input: keep only the position, never the line's text (PHI).
      const pos = /position (\d+)/.exec((e as Error).message)?.[1];
      const err = `${o.input}:${lineNo}: not valid JSON${pos ? ` (at column ${+pos + 1})` : ''}`;
      report.malformed.push({ line: lineNo, error: err });
      process.stderr.write(`warning: ${err}; line skipped\n`);
      continue;
    }
    const strings = { n: 0 };
    countStrings(obj, strings);
    // The values of name fields anywhere in the line are also searched for in its free text.
    const opts = { mode: o.mode, key: o.key, patientKey: patientOf(obj, o.key, fallbackPatient), knownNames: collectNames(obj) };
    const cleaned = deidentifyValue(obj, opts, report.byType, []);
    report.strings += strings.n;
    report.records++;
    await write(JSON.stringify(cleaned) + '\n');
  }
  out.end();
  await once(out, 'finish');
  renameSync(tmp, o.output);
  report.spans = Object.values(report.byType).reduce((a, b) => a + b, 0);
  return report;
}

function countStrings(v: unknown, c: { n: number }): void {
  if (typeof v === 'string') c.n++;
  else if (Array.isArray(v)) v.forEach((x) => countStrings(x, c));
  else if (v && typeof v === 'object') Object.values(v).forEach((x) => countStrings(x, c));
}

export function register(g: CliGroups): void {
  g.program
    .command('deid')
    .description('de-identify a JSONL file (every string value, recursively) or a text file (every line)')
    .requiredOption('--in <file>', 'input file')
    .requiredOption('--out <file>', 'output file')
    .option('--format <fmt>', 'jsonl | txt (default: from the input extension)')
    .option('--report <file>', 'write a JSON report of PHI counts by type here')
    .option('--mode <mode>', 'placeholder | pseudonym', 'placeholder')
    .option('--key-file <file>', 'site de-identification key (64 hex chars); created 0600 if missing (default: <out>.deid.key)')
    .option('--patient <id>', 'patient the text file belongs to (consistent date shift and pseudonyms)')
    .action(async (opts: { in: string; out: string; format?: string; report?: string; mode: string; keyFile?: string; patient?: string }) => {
      const format = (opts.format ?? (/\.jsonl?$/i.test(opts.in) ? 'jsonl' : 'txt')) as DeidFileOptions['format'];
      if (format !== 'jsonl' && format !== 'txt') throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `--format ${opts.format}: expected jsonl or txt`);
      if (opts.mode !== 'placeholder' && opts.mode !== 'pseudonym') throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `--mode ${opts.mode}: expected placeholder or pseudonym`);
      const keyFile = opts.keyFile ?? `${opts.out}.deid.key`;
      const { key, created } = loadOrCreateDeidKey(keyFile);
      if (created) process.stderr.write(`created de-identification key ${keyFile} (mode 0600); keep it at the site\n`);
      const patient = opts.patient === undefined ? undefined : createHmac('sha256', key).update('fedlora/patient\0' + opts.patient).digest('hex').slice(0, 20);
      const report = await deidFile({ input: opts.in, output: opts.out, format, mode: opts.mode, key, patient });
      if (opts.report) writeFileSync(opts.report, JSON.stringify(report, null, 2) + '\n');
      process.stdout.write(`de-identified ${report.records} record(s), ${report.spans} PHI span(s) replaced → ${opts.out}\n`);
      if (report.malformed.length > 0) {
        const where = report.malformed.slice(0, 10).map((m) => `line ${m.line}`).join(', ');
        throw fail('FEDLORA_ERR_INGEST', `${opts.in}: ${report.malformed.length} malformed JSONL line(s) skipped (${where}${report.malformed.length > 10 ? ', ...' : ''}); the other lines were written to ${opts.out}`);
      }
    });
}
