// The consortium dashboard: static files from coordinator/dashboard/ (plain HTML/CSS/JS, no
// CDN, works offline) under /dashboard/, uPlot from node_modules under /dashboard/vendor/, and
// / redirects there. The page itself is public (it asks for a token); the data it shows comes
// from the token-checked JSON routes. Its CSP allows only same-origin files and fetches.
import { readFileSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import type { FastifyReply } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { fail } from '../../shared/errors.ts';
import { DASHBOARD_HELMET } from './security-headers.ts';
import { errors, media } from './schemas.ts';

const DASHBOARD_DIR = fileURLToPath(new URL('../dashboard/', import.meta.url));
const TYPES: Record<string, string> = { html: 'text/html; charset=utf-8', js: 'text/javascript; charset=utf-8', css: 'text/css; charset=utf-8', svg: 'image/svg+xml' };
const PAGE = { config: { access: 'public' as const }, helmet: DASHBOARD_HELMET };
/** The chart library, served as installed (no copy in the repository, no CDN). */
const VENDOR: Record<string, { module: string; type: string }> = {
  'uplot.js': { module: 'uplot/dist/uPlot.iife.min.js', type: TYPES.js },
  'uplot.css': { module: 'uplot/dist/uPlot.min.css', type: TYPES.css },
};

export const dashboardRoutes: FastifyPluginAsyncZod = async (app) => {
  // The file list is fixed at start: only these names are ever served (no path from the URL reaches the file system).
  const files = new Map<string, { body: Buffer; type: string }>();
  for (const f of readdirSync(DASHBOARD_DIR)) {
    const ext = f.split('.').pop() ?? '';
    if (/^[a-z0-9-]+\.(html|js|css|svg)$/.test(f)) files.set(f, { body: readFileSync(DASHBOARD_DIR + f), type: TYPES[ext] });
  }
  const require = createRequire(import.meta.url);
  const vendor = new Map(Object.entries(VENDOR).map(([name, v]) => [name, { body: readFileSync(require.resolve(v.module)), type: v.type }]));
  const send = (reply: FastifyReply, f: { body: Buffer; type: string }) => reply.type(f.type).send(f.body);
  const serve = (name: string, reply: FastifyReply) => {
    const f = files.get(name);
    if (!f) throw fail('FEDLORA_ERR_NOT_FOUND', `no dashboard file ${name}`);
    return send(reply, f);
  };
  const redirect = { ...PAGE, schema: { summary: 'redirects to /dashboard/', response: { 302: z.null().describe('Location: /dashboard/') } } };
  app.get('/', redirect, async (_req, reply) => reply.redirect('/dashboard/'));
  app.get('/dashboard', redirect, async (_req, reply) => reply.redirect('/dashboard/'));
  app.get('/dashboard/', { ...PAGE, schema: { summary: 'the consortium dashboard (HTML; asks for a token)', response: { 200: media('text/html', 'the page') } } }, async (_req, reply) => serve('index.html', reply));
  app.get('/dashboard/:file', {
    ...PAGE,
    schema: { summary: 'a static file of the dashboard (JS, CSS, SVG)', params: z.object({ file: z.string().max(100) }), response: { 200: media('text/javascript', 'the file (JS, CSS or SVG)'), ...errors(404) } },
  }, async (req, reply) => serve(req.params.file, reply));
  app.get('/dashboard/vendor/:file', {
    ...PAGE,
    schema: { summary: 'uPlot (the charts), served from node_modules', params: z.object({ file: z.enum(Object.keys(VENDOR) as [string, ...string[]]) }), response: { 200: media('text/javascript', 'the file'), ...errors(400) } },
  }, async (req, reply) => send(reply as FastifyReply, vendor.get(req.params.file)!));
};
