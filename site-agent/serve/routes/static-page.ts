// The assistant's pages (chat, review, workbench) are static files: they hold no data (every
// /api route needs a key) and are served with one Content-Security-Policy. A line
// `<!-- include NAME -->` in a page's HTML is replaced by the shared part page/NAME (the sign-in
// form) when the file is read, so the three pages carry one copy of it.
import { readFileSync } from 'node:fs';
import { extname, join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { fail } from '../../../shared/errors.ts';

/** The chat page's folder, which also holds what every page shares (common.js, style.css, signin.html). */
export const SHARED_PAGE_DIR = join(import.meta.dirname, '..', 'page');

const PAGE_CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
const TYPES: Record<string, string> = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8' };

function readPageFile(file: string): Buffer {
  const body = readFileSync(file);
  if (extname(file) !== '.html') return body;
  return Buffer.from(body.toString('utf8').replace(/^[ \t]*<!-- include ([\w.-]+) -->\n/gm, (_m, name: string) => readFileSync(join(SHARED_PAGE_DIR, name), 'utf8')));
}

/** GET routes for `files` (URL path → file name in `dir`), read once at start. */
export function servePageFiles(app: FastifyInstance, dir: string, files: Record<string, string>): void {
  for (const [path, name] of Object.entries(files)) {
    const type = TYPES[extname(name)];
    if (!type) throw fail('FEDLORA_ERR_INTERNAL', `page file ${name}: no content type for ${extname(name) || 'a name without an extension'}`);
    const body = readPageFile(join(dir, name));
    app.get(path, async (_req, reply) => reply.type(type).header('Content-Security-Policy', PAGE_CSP).header('Cache-Control', 'no-cache').send(body));
  }
}
