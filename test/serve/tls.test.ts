// serve.tls: the assistant on HTTPS with the hospital's own certificate (made here with openssl):
// `openssl s_client` sees that certificate, and an HTTPS client trusting it gets answers.
import { describe, it, expect, afterAll } from 'vitest';
import { spawn } from 'node:child_process';
import { request } from 'node:https';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startServe } from '../../site-agent/serve/run.ts';
import { makeSite, rmDir } from './helpers.ts';
import { runProcessOk } from '../runner/run-process.ts';

const dir = makeSite('serve-tls-probe').dir; // only for a folder; the real site is below
afterAll(() => rmDir(dir));

describe('assistant over TLS', () => {
  it("serves HTTPS with the configured certificate; clients that trust it get answers", async () => {
    const cert = join(dir, 'assistant.crt'), key = join(dir, 'assistant.key');
    await runProcessOk('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=assistant.hospital-a.example', '-addext', 'subjectAltName=IP:127.0.0.1']);
    const site = makeSite('serve-tls', { tls: { cert, key } });
    const srv = await startServe(site.siteDir);
    try {
      expect(srv.url.startsWith('https://127.0.0.1:')).toBe(true);
      // Asynchronously: the server answers the handshake from this same process.
      const out = await new Promise<string>((resolve) => {
        const p = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${srv.port}`, '-CAfile', cert, '-verify_return_error'], { stdio: ['pipe', 'pipe', 'pipe'] });
        let o = '';
        p.stdout.on('data', (d) => (o += d));
        p.on('close', () => resolve(o));
        p.stdin.end();
      });
      expect(out, out).toMatch(/subject=\s*CN\s*=\s*assistant\.hospital-a\.example/);
      expect(out).toMatch(/Verify return code: 0 \(ok\)/);
      const body = await new Promise<string>((resolve, reject) => {
        const req = request(`${srv.url}/v1/models`, { ca: readFileSync(cert), headers: { authorization: `Bearer ${site.keys.clinician}` } }, (res) => {
          let b = '';
          res.on('data', (d) => (b += d));
          res.on('end', () => resolve(b));
        });
        req.on('error', reject);
        req.end();
      });
      expect(JSON.parse(body).data[0].id).toBe('fedlora-assistant');
    } finally {
      await srv.close();
      rmDir(site.dir);
    }
  });
});
