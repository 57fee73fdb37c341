// Streaming CSV (RFC 4180 + the usual exports): quoted fields with delimiters, doubled quotes
// and newlines inside quotes, CRLF, a UTF-8 BOM. Works on physical lines from readLines, so
// memory stays bounded by one record; a record that grows over the limit is reported as
// too_large while the parser keeps its quote state and resynchronises at the record's end.

import { readLines, type Line, type TextEncoding } from './lines.ts';

export interface CsvRecord {
  startLine: number;
  endLine: number;
  fields: string[];
  /** Set when the record cannot be used; fields are then incomplete. */
  error?: { reason: 'encoding' | 'too_large' | 'truncated'; detail: string };
}

export interface CsvOptions {
  delimiter: string;
  quote: string;
  maxRecordBytes: number;
  encoding?: TextEncoding;
}

/** Parse CSV records from an iterable of physical lines. */
async function* parseCsvLines(lines: AsyncIterable<Line>, opts: CsvOptions): AsyncGenerator<CsvRecord> {
  const { delimiter, quote, maxRecordBytes } = opts;
  let inRecord = false;
  let inQuotes = false;
  let atStart = true; // at the start of a field (where a quote opens a quoted field)
  let fields: string[] = [];
  let cur = '';
  let size = 0;
  let startLine = 0;
  let lastLine = 0;
  let error: CsvRecord['error'];

  const dropText = (): void => {
    fields = [];
    cur = '';
  };

  for await (const line of lines) {
    lastLine = line.lineNo;
    if (!inRecord) {
      if (line.text === '' && !line.encodingError && !line.oversizeBytes) continue; // blank line between records
      inRecord = true;
      startLine = line.lineNo;
      fields = [];
      cur = '';
      atStart = true;
      size = 0;
      error = undefined;
    } else if (!error) {
      cur += '\n'; // the newline inside a quoted field is part of the value
    }

    if (line.encodingError || line.oversizeBytes !== undefined) {
      if (!error) {
        error = line.encodingError
          ? { reason: 'encoding', detail: `line ${line.lineNo}: ${line.encodingError}` }
          : { reason: 'too_large', detail: `line ${line.lineNo} is ${line.oversizeBytes} bytes (limit data.maxRecordBytes = ${maxRecordBytes})` };
        dropText();
      }
      // Keep the quote state right across the unreadable line: each quote byte toggles it.
      if ((line.countedBytes ?? 0) % 2 === 1) inQuotes = !inQuotes;
    } else {
      const t = line.text;
      size += t.length * 2;
      if (!error && size > maxRecordBytes) {
        error = { reason: 'too_large', detail: `record starting at line ${startLine} exceeds ${maxRecordBytes} bytes (data.maxRecordBytes)` };
        dropText();
      }
      const keep = !error;
      // Scan by slices (indexOf) rather than char by char: long fields stay flat strings.
      let i = 0;
      while (i < t.length) {
        if (inQuotes) {
          const q = t.indexOf(quote, i);
          if (q < 0) {
            if (keep) cur += t.slice(i);
            i = t.length;
          } else {
            if (keep) cur += t.slice(i, q);
            if (t[q + 1] === quote) {
              if (keep) cur += quote;
              i = q + 2;
            } else {
              inQuotes = false;
              i = q + 1;
            }
          }
        } else if (atStart && t[i] === quote) {
          inQuotes = true; // a quote opens a field only at its start
          atStart = false;
          i++;
        } else {
          const d = t.indexOf(delimiter, i);
          const end = d < 0 ? t.length : d;
          if (keep) cur += t.slice(i, end);
          if (d < 0) {
            i = t.length;
            atStart = false;
          } else {
            if (keep) fields.push(cur);
            cur = '';
            atStart = true;
            i = d + 1;
          }
        }
      }
    }

    if (!inQuotes) {
      if (!error) fields.push(cur);
      yield { startLine, endLine: line.lineNo, fields, ...(error ? { error } : {}) };
      inRecord = false;
    }
  }
  if (inRecord) {
    yield {
      startLine,
      endLine: lastLine,
      fields: [],
      error: error ?? { reason: 'truncated', detail: `file ends inside a quoted field opened in the record at line ${startLine}` },
    };
  }
}

export function readCsv(path: string, opts: CsvOptions): AsyncGenerator<CsvRecord> {
  return parseCsvLines(
    readLines(path, { encoding: opts.encoding, maxLineBytes: opts.maxRecordBytes, countByte: opts.quote.charCodeAt(0) }),
    opts,
  );
}
