// `fedlora site serve` as its own process: SIGTERM stops new connections but every accepted
// request (generating or queued) is answered before the process exits 0.
import { describe, it, expect, afterAll } from 'vitest';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { freePort } from '../../shared/free-port.ts';
import { makeSite, rmDir } from './helpers.ts';

const BIN = join(import.meta.dirname, '..', '..', 'cli', 'bin.mjs');
const site = makeSite('serve-drain', { concurrency: 1, queue_size: 4 });
afterAll(() => rmDir(site.dir));

describe('graceful drain', () => {
  it('answers every accepted request after SIGTERM, then exits 0', async () => {
    const port = await freePort();
    const p = spawn(process.execPath, [BIN, 'site', 'serve', '--site-dir', site.siteDir, '--port', String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    const exited = new Promise<number | null>((r) => p.on('exit', (code) => r(code)));
    try {
      const url = `http://127.0.0.1:${port}`;
      while (!out.includes('assistant of')) {
        if (p.exitCode !== null) throw new Error(`serve exited early: ${out}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      const auth = { authorization: `Bearer ${site.keys.clinician}`, 'content-type': 'application/json' };
      const ask = (i: number) => fetch(`${url}/v1/chat/completions`, {
        method: 'POST', headers: auth,
        body: JSON.stringify({ model: 'fedlora-assistant', messages: [{ role: 'user', content: `question ${i}` }], max_tokens: 300, temperature: 1, seed: i }),
      });
      
      const pending = [1, 2, 3].map(ask);
      // Wait until the server has accepted all three (one generating, two queued).
      for (;;) {
        const m = await (await fetch(`${url}/metrics`)).text();
        const q = Number(/^fedlora_serve_queue_length (\d+)/m.exec(m)?.[1]);
        const a = Number(/^fedlora_serve_active_requests (\d+)/m.exec(m)?.[1]);
        if (q + a === 3) break;
        await new Promise((r) => setTimeout(r, 10));
      }
      
      p.kill("SIGTERM");
      const replies = await Promise.all(pending);
      for (const r of replies) {
        expect(r.status).toBe(200);
        const body = (await r.json()) as { choices: { message: { content: string } }[] };
        expect(body.choices[0].message.content).toContain("This AI's suggestions are for reference only");
      }
      expect(await exited).toBe(0);
      expect(out).toContain('draining');
      await expect(fetch(`${url}/health`)).rejects.toThrow();
    } finally {
      if (p.exitCode === null) p.kill('SIGKILL');
    }
  });
});
