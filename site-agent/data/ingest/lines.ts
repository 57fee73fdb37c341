// Streaming physical-line reader: splits a file into lines on LF at the byte level (safe for
// UTF-8 and for GBK/GB18030, whose trail bytes are never 0x0A), validates and decodes each line,
// and never buffers more than `maxLineBytes` of one line: a longer line is reported as oversize
// and skipped to its end, so a 1 GB file or a 10 MB record does not need that much memory.

import { createReadStream } from 'node:fs';
import { isUtf8 } from 'node:buffer';

export interface Line {
  /** 1-based physical line number. */
  lineNo: number;
  /** Decoded text without the line terminator (CR of CRLF stripped); '' when bad/oversize. */
  text: string;
  /** The line had a terminating LF (false only for the last line of a file that lacks one). */
  terminated: boolean;
  /** Encoding problem of this line, e.g. 'not valid UTF-8 (looks like GBK/GB18030)'. */
  encodingError?: string;
  /** Byte length of the line when it exceeded maxLineBytes (its text was dropped). */
  oversizeBytes?: number;
  /** When text is unavailable (bad encoding, oversize): how many `countByte` bytes the raw line had,
   *  so a CSV parser can keep its quote state across a line it cannot read. */
  countedBytes?: number;
}

export type TextEncoding = 'utf-8' | 'gb18030' | 'gbk';

const gbDecoder = new TextDecoder('gb18030', { fatal: true });

/** Why a byte string is not valid UTF-8, with a hint when it decodes as GBK/GB18030 Chinese. */
function describeBadUtf8(buf: Buffer): string {
  try {
    const s = gbDecoder.decode(buf);
    if (/[\u4e00-\u9fff]/.test(s)) return 'not valid UTF-8 (the bytes look like GBK/GB18030 Chinese: convert with `iconv -f GB18030 -t UTF-8` or set data.encoding: gb18030)';
  } catch {
    /* not GB either */
  }
  const bad = firstBadUtf8Offset(buf);
  return `not valid UTF-8 (invalid byte 0x${buf[bad]?.toString(16).padStart(2, '0')} at byte ${bad} of the line)`;
}

function firstBadUtf8Offset(buf: Buffer): number {
  // Only called for a line already known to be bad, so a linear scan is fine.
  for (let i = 0; i < buf.length; i++) {
    const b = buf[i];
    const need = b < 0x80 ? 0 : b >= 0xc2 && b < 0xe0 ? 1 : b >= 0xe0 && b < 0xf0 ? 2 : b >= 0xf0 && b < 0xf5 ? 3 : -1;
    if (need < 0) return i;
    if (!isUtf8(buf.subarray(i, i + need + 1))) return i;
    i += need;
  }
  return 0;
}

function decode(buf: Buffer, encoding: TextEncoding): { text: string; error?: string } {
  if (encoding === 'utf-8') {
    if (!isUtf8(buf)) return { text: '', error: describeBadUtf8(buf) };
    return { text: buf.toString('utf8') };
  }
  try {
    return { text: new TextDecoder(encoding, { fatal: true }).decode(buf) };
  } catch {
    return { text: '', error: `not valid ${encoding.toUpperCase()}` };
  }
}

/** Lines of a file, read in 1 MiB chunks. The UTF-8 BOM at the start is dropped. */
export async function* readLines(
  path: string,
  opts: { encoding?: TextEncoding; maxLineBytes: number; countByte?: number },
): AsyncGenerator<Line> {
  const countByte = opts.countByte ?? -1;
  let counted = 0;
  const countIn = (b: Buffer): void => {
    if (countByte < 0) return;
    for (let i = b.indexOf(countByte); i >= 0; i = b.indexOf(countByte, i + 1)) counted++;
  };
  const encoding = opts.encoding ?? 'utf-8';
  const stream = createReadStream(path, { highWaterMark: 1 << 20 });
  let parts: Buffer[] = [];
  let partBytes = 0;
  let oversize = 0; // bytes of the current line once it has gone over the limit
  let lineNo = 0;
  let first = true;

  const finish = (terminated: boolean): Line => {
    lineNo++;
    if (oversize > 0) {
      const l: Line = { lineNo, text: '', terminated, oversizeBytes: oversize, countedBytes: counted };
      oversize = 0;
      counted = 0;
      return l;
    }
    let buf = parts.length === 1 ? parts[0] : Buffer.concat(parts, partBytes);
    parts = [];
    partBytes = 0;
    if (first) {
      first = false;
      if (buf.length >= 3 && buf[0] === 0xef && buf[1] === 0xbb && buf[2] === 0xbf) buf = buf.subarray(3);
    }
    if (buf.length > 0 && buf[buf.length - 1] === 0x0d) buf = buf.subarray(0, buf.length - 1);
    const d = decode(buf, encoding);
    if (d.error === undefined) return { lineNo, text: d.text, terminated };
    counted = 0;
    countIn(buf);
    const l: Line = { lineNo, text: '', terminated, encodingError: d.error, countedBytes: counted };
    counted = 0;
    return l;
  };

  const append = (piece: Buffer): void => {
    if (piece.length === 0) return;
    if (oversize > 0) {
      oversize += piece.length;
      countIn(piece);
      return;
    }
    if (partBytes + piece.length > opts.maxLineBytes) {
      oversize = partBytes + piece.length;
      counted = 0;
      for (const p of parts) countIn(p);
      countIn(piece);
      parts = [];
      partBytes = 0;
      return;
    }
    // Copy: the stream's chunk would otherwise stay alive as long as the part does.
    parts.push(Buffer.from(piece));
    partBytes += piece.length;
  };

  for await (const chunk of stream as AsyncIterable<Buffer>) {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      if (nl < 0) {
        append(chunk.subarray(start));
        break;
      }
      append(chunk.subarray(start, nl));
      yield finish(true);
      start = nl + 1;
    }
  }
  if (partBytes > 0 || oversize > 0) yield finish(false);
}
