// A TCP proxy on 127.0.0.1 that paces the bytes a site sends to the coordinator (a slow
// hospital uplink), so an adapter upload lasts seconds and a test can act in the middle of it.
// The site dials it with `fedlora site start --endpoint 127.0.0.1:PORT`: TLS is end to end
// and the certificate name check passes (still 127.0.0.1). Coordinator -> site bytes pass
// unpaced. `throttled = false` switches to plain pass-through (queued bytes go out at once).
import { createConnection, createServer, type Server, type Socket } from 'node:net';

interface Pair {
  client: Socket;
  up: Socket;
  queue: Buffer[];
  queued: number;
}

export class ThrottleProxy {
  throttled = true;
  /** Site -> coordinator bytes forwarded so far (all connections). */
  upBytes = 0;
  connections = 0;
  port = 0;
  private server!: Server;
  private readonly pairs = new Set<Pair>();
  private timer: NodeJS.Timeout | null = null;
  private static readonly TICK_MS = 20;
  private static readonly HIGH_WATER = 64 * 1024;

  constructor(private readonly target: number, private readonly bytesPerSecond: number) {}

  async start(): Promise<void> {
    this.server = createServer((client) => {
      this.connections++;
      const up = createConnection({ host: '127.0.0.1', port: this.target });
      const pair: Pair = { client, up, queue: [], queued: 0 };
      this.pairs.add(pair);
      client.on('data', (d) => {
        pair.queue.push(d);
        pair.queued += d.length;
        // Backpressure: the site's TCP window fills up, as on a slow link.
        if (pair.queued > ThrottleProxy.HIGH_WATER) client.pause();
        if (!this.throttled) this.forward(pair, Infinity);
      });
      up.on('data', (d) => client.write(d));
      const close = () => {
        client.destroy();
        up.destroy();
        pair.queue = [];
        pair.queued = 0;
        this.pairs.delete(pair);
      };
      client.on('error', close).on('close', close);
      up.on('error', close).on('close', close);
    });
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', () => r()));
    this.port = (this.server.address() as { port: number }).port;
    const budget = Math.max(1, Math.floor((this.bytesPerSecond * ThrottleProxy.TICK_MS) / 1000));
    this.timer = setInterval(() => {
      for (const p of this.pairs) this.forward(p, this.throttled ? budget : Infinity);
    }, ThrottleProxy.TICK_MS);
  }

  private forward(p: Pair, budget: number): void {
    while (p.queue.length && budget > 0 && !p.up.destroyed) {
      const head = p.queue[0];
      const n = Math.min(head.length, budget);
      if (n === head.length) p.queue.shift();
      else p.queue[0] = head.subarray(n);
      p.up.write(n === head.length ? head : head.subarray(0, n));
      p.queued -= n;
      this.upBytes += n;
      budget -= n;
    }
    if (p.queued <= ThrottleProxy.HIGH_WATER / 2 && p.client.isPaused()) p.client.resume();
  }

  close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    for (const p of this.pairs) {
      p.client.destroy();
      p.up.destroy();
    }
    this.pairs.clear();
    return new Promise((r) => this.server.close(() => r()));
  }
}
