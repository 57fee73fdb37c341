// The server is extended with page plugins (ServePlugin) that reuse the same keys and roles:
// requireRole('admin') refuses a clinician (403), a missing key is 401, an admin passes.
import { describe, it, expect, afterAll } from 'vitest';
import { startServe, type RunningServe } from '../../site-agent/serve/run.ts';
import type { ServePlugin } from '../../site-agent/serve/server.ts';
import { makeSite, rmDir } from './helpers.ts';

const site = makeSite('serve-plugins');
let srv: RunningServe | null = null;
afterAll(async () => {
  await srv?.close();
  rmDir(site.dir);
});

const reviewPage: ServePlugin = async (app, ctx) => {
  app.get('/review/queue', { onRequest: ctx.requireRole('admin') }, async (req) => ({ reviewer: req.user!.name, answers: ctx.db.prepare('SELECT count(*) FROM serve_answers').pluck().get() }));
  app.get('/review/mine', { onRequest: ctx.requireRole('clinician') }, async (req) => ({ user: req.user!.name, role: req.user!.role }));
};

describe('page plugins', () => {
  it('reuse the keys and roles of the assistant', async () => {
    srv = await startServe(site.siteDir, { plugins: [reviewPage] });
    const get = (path: string, key?: string) => fetch(`${srv!.url}${path}`, { headers: key ? { authorization: `Bearer ${key}` } : {} });
    expect((await get('/review/queue')).status).toBe(401);
    const denied = await get('/review/queue', site.keys.clinician);
    expect(denied.status).toBe(403);
    expect(((await denied.json()) as { error: { code: string } }).error.code).toBe('FEDLORA_ERR_PERMISSION');
    expect(await (await get('/review/queue', site.keys.admin)).json()).toEqual({ reviewer: 'admin', answers: 0 });
    expect(await (await get('/review/mine', site.keys.admin)).json()).toEqual({ user: 'admin', role: 'admin' });
    expect(await (await get('/review/mine', site.keys.clinician)).json()).toEqual({ user: 'dr.li', role: 'clinician' });
  });
});
