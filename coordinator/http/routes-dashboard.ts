// The researchers' dashboard: static files from coordinator/dashboard/ (plain HTML/CSS/JS, no
// CDN, works offline) under /dashboard/, and / redirects there. Its JS reads the open JSON
// read routes; the one write it offers (request a cross-evaluation) sends the admin bearer
// token the user typed, kept in sessionStorage only. Its CSP allows only same-origin files.
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { FastifyPluginAsync, FastifyReply } from 'fastify';
import { fail } from '../../shared/errors.ts';

export const DASHBOARD_DIR = fileURLToPath(new URL('../dashboard/', import.meta.url));
const TYPES: Record<string, string> = { html: 'text/html; charset=utf-8', js: 'text/javascript; charset=utf-8', css: 'text/css; charset=utf-8', svg: 'image/svg+xml' };
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

export const dashboardRoutes: FastifyPluginAsync = async (app) => {
  // The file list is fixed at start: only these names are ever served (no path from the URL reaches the file system).
  const files = new Map<string, { body: Buffer; type: string }>();
  for (const f of readdirSync(DASHBOARD_DIR)) {
    const ext = f.split('.').pop() ?? '';
    if (/^[a-z0-9-]+\.(html|js|css|svg)$/.test(f)) files.set(f, { body: readFileSync(DASHBOARD_DIR + f), type: TYPES[ext] });
  }
  const send = (name: string) => {
    const f = files.get(name);
    if (!f) throw fail('FEDLORA_ERR_NOT_FOUND', `no dashboard file ${name}`);
    return f;
  };
  app.get('/', async (_req, reply) => reply.redirect('/dashboard/'));
  app.get('/dashboard', async (_req, reply) => reply.redirect('/dashboard/'));
  const serve = (name: string, reply: FastifyReply) => {
    const f = send(name);
    reply.header('Content-Security-Policy', CSP);
    return reply.type(f.type).send(f.body);
  };
  app.get('/dashboard/', async (_req, reply) => serve('index.html', reply));
  app.get<{ Params: { file: string } }>('/dashboard/:file', async (req, reply) => serve(req.params.file, reply));
};
