// CSV and JSONL sources: stream records, apply the field mapping, hand them to the sink.

import type { DataConfig, MappableField } from '../config-schema.ts';
import { MAPPABLE_FIELDS } from '../config-schema.ts';
import { readCsv } from './csv.ts';
import { readLines } from './lines.ts';
import type { RecordSink, MappedFields } from './sink.ts';
import { jsonErrorDetail } from './sink.ts';
import { fail } from '../../../shared/errors.ts';

/** Turn a JSON value into field text: objects/arrays (e.g. a labs object) become "k: v; ..." */
function valueText(v: unknown): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return v.map(valueText).filter((x) => x !== undefined).join('; ');
  if (typeof v === 'object') {
    return Object.entries(v as Record<string, unknown>)
      .map(([k, x]) => `${k}: ${valueText(x) ?? ''}`)
      .join('; ');
  }
  return undefined;
}

function getPath(obj: Record<string, unknown>, path: string): unknown {
  if (path in obj) return obj[path];
  let cur: unknown = obj;
  for (const part of path.split('.')) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur;
}

const mappedEntries = (cfg: DataConfig): [MappableField, string][] =>
  MAPPABLE_FIELDS.filter((f) => cfg.mapping[f] !== null).map((f) => [f, cfg.mapping[f] as string]);

/** Returns notes for the summary (e.g. optional mapped columns the header lacks). */
export async function ingestCsv(path: string, fileHash: string, cfg: DataConfig, sink: RecordSink): Promise<string[]> {
  const notes: string[] = [];
  let header: string[] | null = null;
  let cols: [MappableField, number][] = [];
  for await (const rec of readCsv(path, { ...cfg.csv, maxRecordBytes: cfg.maxRecordBytes, encoding: cfg.encoding })) {
    const where = rec.startLine === rec.endLine ? `${path}:${rec.startLine}` : `${path}:${rec.startLine}-${rec.endLine}`;
    const qkey = `${fileHash}:${rec.startLine}`;
    if (!header) {
      if (rec.error) throw fail(rec.error.reason === 'encoding' ? 'FEDLORA_ERR_ENCODING' : 'FEDLORA_ERR_INGEST', `${path}:${rec.startLine}: header row unusable: ${rec.error.detail}`);
      header = rec.fields.map((h) => h.trim());
      const index = new Map(header.map((h, i) => [h, i]));
      cols = [];
      for (const [field, col] of mappedEntries(cfg)) {
        const i = index.get(col);
        if (i !== undefined) cols.push([field, i]);
        else if (cfg.required.includes(field)) {
          throw fail('FEDLORA_ERR_MAPPING', `${path}:1: required field ${field} is mapped to column "${col}" (data.mapping.${field}), which the header does not have (columns: ${header.join(', ')})`);
        } else notes.push(`${path}: optional field ${field} is mapped to column "${col}" (data.mapping.${field}), which the header does not have; it stays empty`);
      }
      continue;
    }
    if (rec.error) {
      sink.quarantine(rec.error.reason, where, rec.error.detail, qkey);
      continue;
    }
    if (rec.fields.length !== header.length) {
      sink.quarantine('column_count', where, `${rec.fields.length} fields, header has ${header.length}`, qkey);
      continue;
    }
    const m: MappedFields = {};
    for (const [field, i] of cols) m[field] = rec.fields[i];
    sink.accept(m, where, qkey);
  }
  if (!header) throw fail('FEDLORA_ERR_INGEST', `${path}: empty file (no header row)`);
  return notes;
}

export async function ingestJsonl(path: string, fileHash: string, cfg: DataConfig, sink: RecordSink): Promise<void> {
  const entries = mappedEntries(cfg);
  for await (const line of readLines(path, { encoding: cfg.encoding, maxLineBytes: cfg.maxRecordBytes })) {
    const where = `${path}:${line.lineNo}`;
    const qkey = `${fileHash}:${line.lineNo}`;
    if (line.encodingError) {
      sink.quarantine('encoding', where, line.encodingError, qkey);
      continue;
    }
    if (line.oversizeBytes !== undefined) {
      sink.quarantine('too_large', where, `line is ${line.oversizeBytes} bytes (limit data.maxRecordBytes = ${cfg.maxRecordBytes})`, qkey);
      continue;
    }
    if (line.text.trim() === '') continue;
    let obj: unknown;
    try {
      obj = JSON.parse(line.text);
    } catch (e) {
      if (!line.terminated) sink.quarantine('truncated', where, `last line is incomplete JSON (file truncated?): ${jsonErrorDetail(e)}`, qkey);
      else sink.quarantine('invalid_json', where, jsonErrorDetail(e), qkey);
      continue;
    }
    if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
      sink.quarantine('invalid_json', where, `expected a JSON object, got ${Array.isArray(obj) ? 'an array' : typeof obj}`, qkey);
      continue;
    }
    const m: MappedFields = {};
    for (const [field, key] of entries) {
      const v = valueText(getPath(obj as Record<string, unknown>, key));
      if (v !== undefined) m[field] = v;
    }
    sink.accept(m, where, qkey);
  }
}
