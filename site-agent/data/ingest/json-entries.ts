// Streaming extractor of a FHIR Bundle's `entry` array: scans the JSON text chunk by chunk,
// tracking strings and nesting, and yields the raw text of one entry at a time. A Synthea
// bundle of hundreds of MB is never parsed (or held) as a whole; an entry larger than the
// limit is reported as oversize and skipped, and a file that ends early is reported as
// truncated after the complete entries before it.

import { createReadStream } from 'node:fs';

export type EntryEvent =
  | { kind: 'entry'; index: number; text: string }
  | { kind: 'oversize'; index: number; bytes: number }
  | { kind: 'end'; rootType: string | undefined; truncated: boolean; entries: number; badUtf8: boolean };

export async function* streamBundleEntries(path: string, maxEntryChars: number): AsyncGenerator<EntryEvent> {
  const decoder = new TextDecoder('utf-8', { fatal: true });
  let depth = 0;
  let inStr = false;
  let esc = false;
  let str = '';
  let capture = false; // capture string text (only short strings at depth 1)
  let lastStr: string | null = null;
  let currentKey: string | null = null;
  let rootType: string | undefined;
  let inEntries = false;
  let collecting = false;
  let parts: string[] = [];
  let size = 0;
  let oversize = false;
  let index = 0;

  // 64 KiB chunks: the decoded string of a chunk stays a regular (young-generation) heap object
  // instead of a large object that lingers until a full GC.
  const stream = createReadStream(path, { highWaterMark: 1 << 16 });
  let first = true;
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      let s = decoder.decode(chunk, { stream: true });
      if (first) {
        first = false;
        if (s.charCodeAt(0) === 0xfeff) s = s.slice(1);
      }
      let segStart = collecting ? 0 : -1;
      for (let i = 0; i < s.length; i++) {
        const c = s.charCodeAt(i);
        if (inStr) {
          if (esc) esc = false;
          else if (c === 0x5c) esc = true;
          else if (c === 0x22) {
            inStr = false;
            if (depth === 1) {
              if (currentKey === null) lastStr = str;
              else if (currentKey === 'resourceType') rootType = str;
            }
          } else if (capture && str.length < 64) str += s[i];
          continue;
        }
        switch (c) {
          case 0x22: // "
            inStr = true;
            str = '';
            capture = depth === 1;
            break;
          case 0x3a: // :
            if (depth === 1) currentKey = lastStr;
            break;
          case 0x2c: // ,
            if (depth === 1) currentKey = null;
            break;
          case 0x7b: // {
          case 0x5b: // [
            if (depth === 1 && currentKey === 'entry' && c === 0x5b) inEntries = true;
            else if (inEntries && depth === 2 && c === 0x7b) {
              collecting = true;
              segStart = i;
              parts = [];
              size = 0;
              oversize = false;
            }
            depth++;
            break;
          case 0x7d: // }
          case 0x5d: // ]
            depth--;
            if (inEntries && depth === 2 && collecting && c === 0x7d) {
              collecting = false;
              if (oversize) {
                yield { kind: 'oversize', index: index++, bytes: size + i + 1 - segStart };
              } else {
                parts.push(s.slice(segStart, i + 1));
                yield { kind: 'entry', index: index++, text: parts.join('') };
              }
              parts = [];
              segStart = -1;
            } else if (inEntries && depth === 1) inEntries = false;
            break;
        }
      }
      if (collecting && segStart >= 0) {
        const piece = s.length - segStart;
        size += piece;
        if (!oversize && size > maxEntryChars) {
          oversize = true;
          parts = [];
        }
        if (!oversize) parts.push(s.slice(segStart));
      }
    }
    decoder.decode();
  } catch (e) {
    if (e instanceof TypeError) {
      yield { kind: 'end', rootType, truncated: false, entries: index, badUtf8: true };
      return;
    }
    throw e;
  }
  yield { kind: 'end', rootType, truncated: depth !== 0 || inStr, entries: index, badUtf8: false };
}
