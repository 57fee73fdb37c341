// The bounded request queue: `concurrency` requests generate at once, `queueSize` more wait in
// arrival order, and beyond that a request is refused at once with 429 and a Retry-After
// estimated from recent request durations. A waiting request whose client goes away leaves the
// queue. drain() resolves when nothing is running or waiting (graceful shutdown).
import { FedloraError } from '../../shared/errors.ts';

export class QueueFullError extends FedloraError {
  constructor(readonly retryAfterS: number, waiting: number) {
    super('FEDLORA_ERR_RATE_LIMITED', `the assistant is busy: ${waiting} request(s) already waiting (serve.queue_size); retry after ${retryAfterS} s`);
  }
}

export class RequestQueue {
  private running = 0;
  private readonly waiting: { grant: () => void; signal?: AbortSignal; onAbort: () => void }[] = [];
  private recentMs: number[] = [];
  private idle: (() => void)[] = [];

  constructor(private readonly concurrency: number, private readonly queueSize: number) {}

  get length(): number {
    return this.waiting.length;
  }
  get active(): number {
    return this.running;
  }

  /** Wait for a slot; returns the function that frees it. Throws QueueFullError when full, and
   *  rejects with the signal's reason if it is aborted while waiting. */
  acquire(signal?: AbortSignal): Promise<() => void> {
    if (signal?.aborted) return Promise.reject(signal.reason ?? new Error('aborted'));
    const started = () => {
      this.running++;
      const t0 = performance.now();
      let done = false;
      return () => {
        if (done) return;
        done = true;
        this.recentMs = [...this.recentMs.slice(-19), performance.now() - t0];
        this.running--;
        this.next();
      };
    };
    if (this.running < this.concurrency && this.waiting.length === 0) return Promise.resolve(started());
    if (this.waiting.length >= this.queueSize) return Promise.reject(new QueueFullError(this.retryAfterS(), this.waiting.length));
    return new Promise((resolve, reject) => {
      const entry = {
        signal,
        grant: () => {
          signal?.removeEventListener('abort', entry.onAbort);
          resolve(started());
        },
        onAbort: () => {
          const i = this.waiting.indexOf(entry);
          if (i >= 0) this.waiting.splice(i, 1);
          reject(signal?.reason ?? new Error('aborted'));
          this.checkIdle();
        },
      };
      signal?.addEventListener('abort', entry.onAbort, { once: true });
      this.waiting.push(entry);
    });
  }

  /** Seconds until a slot is likely free for one more request: the queue ahead of it times the
   *  mean recent request duration, over the concurrency; at least 1. */
  retryAfterS(): number {
    const mean = this.recentMs.length ? this.recentMs.reduce((a, b) => a + b, 0) / this.recentMs.length : 1000;
    return Math.max(1, Math.ceil(((this.waiting.length + 1) * mean) / this.concurrency / 1000));
  }

  /** Resolves once nothing runs or waits. */
  drain(): Promise<void> {
    if (this.running === 0 && this.waiting.length === 0) return Promise.resolve();
    return new Promise((r) => this.idle.push(r));
  }

  private next(): void {
    while (this.running < this.concurrency && this.waiting.length > 0) this.waiting.shift()!.grant();
    this.checkIdle();
  }

  private checkIdle(): void {
    if (this.running === 0 && this.waiting.length === 0) for (const r of this.idle.splice(0)) r();
  }
}
