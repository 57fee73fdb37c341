// Network faults between a site and the coordinator: the site dials a TCP proxy on 127.0.0.1
// (node:net, `fedlora site start --endpoint 127.0.0.1:PROXY`; the TLS name check still passes,
// the host is still 127.0.0.1). The proxy resets all connections and refuses new ones (cut),
// or holds bytes without forwarding (stall). The coordinator marks the site offline after the
// heartbeat timeout, the site reconnects with backoff by itself, and a job then completes
// through the proxy; a round opened during a stall still ends by its deadline.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { setupFederation, type Federation } from './harness.ts';
import { TEST_TIMEOUT_MS } from '../runner/limits.ts';

class FaultProxy {
  mode: 'pass' | 'refuse' | 'stall' = 'pass';
  private server!: Server;
  private pairs = new Set<[Socket, Socket]>();
  connections = 0;
  port = 0;
  constructor(private target: number) {}
  async start(): Promise<void> {
    this.server = createServer((client) => {
      if (this.mode === 'refuse') return void client.resetAndDestroy();
      this.connections++;
      const up = createConnection({ host: '127.0.0.1', port: this.target });
      const pair: [Socket, Socket] = [client, up];
      this.pairs.add(pair);
      const pipe = (a: Socket, b: Socket) =>
        a.on('data', (d) => {
          if (this.mode === 'stall') return; // swallowed: the peer sees silence, not an error
          b.write(d);
        });
      pipe(client, up);
      pipe(up, client);
      const close = () => {
        client.destroy();
        up.destroy();
        this.pairs.delete(pair);
      };
      client.on('error', close).on('close', close);
      up.on('error', close).on('close', close);
    });
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', () => r()));
    this.port = (this.server.address() as { port: number }).port;
  }
  /** Reset every open connection (RST) — a cable pulled / firewall reset. */
  resetAll(): void {
    for (const [a, b] of this.pairs) {
      a.resetAndDestroy();
      b.resetAndDestroy();
    }
    this.pairs.clear();
  }
  close(): Promise<void> {
    this.resetAll();
    return new Promise((r) => this.server.close(() => r()));
  }
}

let fed: Federation;
let proxy: FaultProxy;
beforeAll(async () => {
  fed = await setupFederation({ sites: 1 });
  proxy = new FaultProxy(fed.fedPort);
  await proxy.start();
});
afterAll(async () => {
  await proxy?.close();
  await fed?.stopAll();
});

const onlineOf = async (f: Federation) => (await f.api<{ sites: { id: string; online?: boolean }[] }>('/api/sites')).sites.find((s) => s.id === 'hospital-1')?.online === true;

describe('fault: network cuts and stalls between a site and the coordinator', () => {
  it('offline after the heartbeat timeout, reconnects with backoff, deadlines hold, job completes', async () => {
    fed.startSite(0, `127.0.0.1:${proxy.port}`);
    await fed.waitFor('site online through the proxy', 2, async () => ((await onlineOf(fed)) ? true : null));
    expect(proxy.connections).toBeGreaterThan(0);

    // Cut: reset every connection and refuse new ones.
    proxy.mode = 'refuse';
    proxy.resetAll();
    // offline by the heartbeat timeout: its heartbeats have stopped for heartbeat.timeout_ms
    const off = await fed.waitFor('site marked offline', 1, async () => {
      const s = (await fed.api<{ sites: { id: string; online?: boolean; last_seen: string | null }[] }>('/api/sites')).sites.find((x) => x.id === 'hospital-1');
      return s?.online === false ? { lastSeen: Date.parse(s.last_seen!), answeredAt: Date.now() } : null;
    }, fed.heartbeatTimeoutMs);
    expect(off.answeredAt - off.lastSeen).toBeGreaterThanOrEqual(fed.heartbeatTimeoutMs);

    // Restore: the site's backoff retries find the way back by themselves.
    const before = proxy.connections;
    proxy.mode = 'pass';
    await fed.waitFor('site back online after the cut', 2, async () => ((await onlineOf(fed)) ? true : null));
    expect(proxy.connections).toBeGreaterThan(before);

    // Stall while a round is open: the round ends by its deadline (no update arrived), retries
    // are used up and the job fails cleanly — the coordinator does not hang on a silent peer.
    // The round must be open (task delivered, site busy training) before the stall: a job
    // submitted while the site is already offline rightly waits for sites instead of opening.
    // a deadline with room to see the task delivered before the stall
    const stalledDeadlineS = fed.roundDeadlineS(2);
    const stalledJob = await fed.submitJob({ rounds: 1, min_sites: 1, round_deadline_s: stalledDeadlineS, round_retries: 0, train: { local_steps: 400, learning_rate: 5e-3, optimizer: 'adamw', batch_tokens: 512, seed: 1, warmup_steps: 0, max_grad_norm: 1 } });
    await fed.waitFor('round 1 open with its task delivered', 1, async () => {
      const r = (await fed.rounds(stalledJob))[0] as { state: string; tasks?: { status: string }[] } | undefined;
      return r && r.state === 'open' && r.tasks?.some((t) => t.status === 'delivered') ? true : null;
    });
    proxy.mode = 'stall';
    const failed = await fed.waitFor('stalled job to end at its deadline', 1, async () => {
      const j = await fed.api<{ status: string; error: string | null }>(`/api/jobs/${stalledJob}`);
      return j.status === 'running' ? null : j;
    }, stalledDeadlineS * 1000);
    expect(failed.status).toBe('failed');
    expect(failed.error).toMatch(/deadline passed with 0 accepted/);

    // Heal (reset the stalled connections so the site notices), then a job completes through the proxy.
    proxy.mode = 'pass';
    proxy.resetAll();
    await fed.waitFor('site online after the stall', 2, async () => ((await onlineOf(fed)) ? true : null));
    const deadlineS = fed.roundDeadlineS(4);
    const jobId = await fed.submitJob({ rounds: 1, min_sites: 1, round_deadline_s: deadlineS });
    const done = await fed.waitFor('job completed through the proxy', 2, async () => {
      const j = await fed.api<{ status: string; current_version: number; error: string | null }>(`/api/jobs/${jobId}`);
      if (j.status === 'failed') throw new Error(`job failed: ${j.error}`);
      return j.status === 'completed' ? j : null;
    }, deadlineS * 1000);
    expect(done.current_version).toBe(1);
    const acc = fed.query(`SELECT site_id FROM updates WHERE job_id = ? AND status = 'accepted'`, jobId);
    expect(acc).toEqual([{ site_id: 'hospital-1' }]);
  }, 2 * TEST_TIMEOUT_MS);
});
