// Reading knowledge-base documents (txt, md, html) into titled sections, then passages of at
// most `maxChars` characters cut at paragraph or sentence ends. HTML is read with a small tag
// stripper of our own (no HTML parser is installed; guideline pages are plain documents):
// script/style dropped, headings kept as headings, block tags as line breaks, entities decoded.
// PDF is not supported: convert it to text first (e.g. `pdftotext`).
import { readFileSync } from 'node:fs';
import { basename, extname } from 'node:path';
import { fail } from '../../../shared/errors.ts';
import { sha256Hex } from '../../../shared/hash.ts';

export interface Section {
  heading: string | null;
  text: string;
}

export interface ParsedDocument {
  name: string;
  format: 'txt' | 'md' | 'html';
  title: string | null;
  sections: Section[];
  /** sha256 of the file's bytes (a document added again unchanged is recognised by it). */
  sha256: string;
}

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: ' ' };

function decodeEntities(s: string): string {
  return s.replace(/&(#x[0-9a-f]+|#\d+|[a-z]+);/gi, (m, e: string) => {
    if (e[0] === '#') {
      const cp = e[1] === 'x' || e[1] === 'X' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10);
      return Number.isFinite(cp) && cp > 0 && cp < 0x110000 ? String.fromCodePoint(cp) : m;
    }
    return ENTITIES[e.toLowerCase()] ?? m;
  });
}

/** HTML to markdown-like text: <h1>-<h6> become '#' headings, block ends become line breaks. */
export function htmlToText(html: string): string {
  return decodeEntities(
    html
      .replace(/<!--[\s\S]*?-->/g, '')
      .replace(/<(script|style|head)\b[\s\S]*?<\/\1\s*>/gi, '')
      .replace(/<h([1-6])\b[^>]*>([\s\S]*?)<\/h\1\s*>/gi, (_m, n: string, t: string) => `\n\n${'#'.repeat(Number(n))} ${t.replace(/<[^>]*>/g, '').trim()}\n\n`)
      .replace(/<(br|hr)\b[^>]*>/gi, '\n')
      .replace(/<\/(p|div|li|tr|table|ul|ol|section|article|blockquote|pre)\s*>/gi, '\n\n')
      .replace(/<li\b[^>]*>/gi, '- ')
      .replace(/<[^>]*>/g, ''),
  ).replace(/[ \t]+\n/g, '\n');
}

/** Markdown (or plain text) into sections by heading; text before the first heading has none. */
export function sectionsOf(text: string): { title: string | null; sections: Section[] } {
  const sections: Section[] = [];
  let title: string | null = null;
  let cur: Section = { heading: null, text: '' };
  for (const line of text.replace(/\r\n?/g, '\n').split('\n')) {
    const h = /^(#{1,6})\s+(.+?)\s*#*\s*$/.exec(line);
    if (h) {
      if (cur.text.trim()) sections.push({ heading: cur.heading, text: cur.text.trim() });
      if (h[1].length === 1 && title === null) title = h[2];
      cur = { heading: h[1].length === 1 ? null : h[2], text: '' };
    } else cur.text += line + '\n';
  }
  if (cur.text.trim()) sections.push({ heading: cur.heading, text: cur.text.trim() });
  return { title, sections };
}

export function readDocument(path: string): ParsedDocument {
  const ext = extname(path).toLowerCase();
  const format = ext === '.md' || ext === '.markdown' ? 'md' : ext === '.html' || ext === '.htm' ? 'html' : ext === '.txt' ? 'txt' : null;
  if (!format) throw fail('FEDLORA_ERR_KB_DOCUMENT', `${path}: ${ext || 'no extension'} is not a supported document (txt, md, html; convert PDF to text first)`);
  let raw: Buffer;
  try {
    raw = readFileSync(path);
  } catch (e) {
    throw fail('FEDLORA_ERR_KB_DOCUMENT', `${path}: cannot read (${(e as Error).message})`);
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(raw);
  } catch {
    throw fail('FEDLORA_ERR_KB_DOCUMENT', `${path}: not valid UTF-8 (save it as UTF-8)`);
  }
  const { title, sections } = sectionsOf(format === 'html' ? htmlToText(text) : text);
  if (sections.length === 0) throw fail('FEDLORA_ERR_KB_DOCUMENT', `${path}: no text found`);
  return { name: basename(path), format, title, sections, sha256: sha256Hex(raw) };
}

/** Cut a section into passages of at most maxChars, at paragraph, then sentence, ends. */
export function passagesOf(section: Section, maxChars: number): string[] {
  const out: string[] = [];
  let cur = '';
  const pieces = section.text.split(/\n\s*\n/).flatMap((para) => (para.length <= maxChars ? [para.trim()] : para.match(/[^。！？.!?\n]+[。！？.!?]?\s*/gu) ?? [para]));
  for (const piece of pieces) {
    const p = piece.trim();
    if (!p) continue;
    if (cur && cur.length + 1 + p.length > maxChars) {
      out.push(cur);
      cur = '';
    }
    cur = cur ? `${cur}\n${p}` : p;
    while (cur.length > maxChars) {
      out.push(cur.slice(0, maxChars));
      cur = cur.slice(maxChars);
    }
  }
  if (cur) out.push(cur);
  return out;
}
