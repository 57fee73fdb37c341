// Deadlines derived from measured work, for tests on a machine whose speed changes under them (a
// 2-core machine shared with other work, a full suite running two files at a time). A clock
// holds the slowest time per unit of work seen so far — a reference operation timed when the
// clock is made, then every operation timed through it — and allows a generous multiple of that
// for the work at hand. It only grows: a burst of load makes later deadlines longer, never
// shorter, and a deadline is never a fixed number of seconds.
export class WorkClock {
  private perUnitMs: number;

  /**
   * @param what    the unit of work, for messages ("a 1 MiB gRPC round trip")
   * @param referenceMs  the measured time of one unit
   * @param factor  how many times the slowest unit a piece of work may take before it is stuck
   */
  constructor(readonly what: string, readonly referenceMs: number, readonly factor: number) {
    this.perUnitMs = Math.max(referenceMs, 1);
  }

  /** Time a reference operation `samples` times and make a clock of the slowest sample. */
  static async measure(what: string, factor: number, samples: number, op: () => Promise<unknown>): Promise<WorkClock> {
    let slowest = 0;
    for (let i = 0; i < samples; i++) {
      const t = performance.now();
      await op();
      slowest = Math.max(slowest, performance.now() - t);
    }
    return new WorkClock(what, slowest, factor);
  }

  /** The slowest time per unit seen so far (ms). */
  get unitMs(): number {
    return this.perUnitMs;
  }

  /** Milliseconds allowed for `units` units of work. */
  budgetMs(units = 1): number {
    return Math.ceil(this.factor * this.perUnitMs * Math.max(units, 1));
  }

  /** The moment by which `units` units of work started now must be done. */
  deadline(units = 1): Date {
    return new Date(Date.now() + this.budgetMs(units));
  }

  /** Record a finished piece of work. */
  observe(ms: number, units = 1): void {
    this.perUnitMs = Math.max(this.perUnitMs, ms / Math.max(units, 1));
  }

  /** Run `op`, recording its duration as `units` units of work. */
  async time<T>(units: number, op: () => Promise<T>): Promise<T> {
    const t = performance.now();
    try {
      return await op();
    } finally {
      this.observe(performance.now() - t, units);
    }
  }

  /** For messages: how a budget came about. */
  explain(units = 1): string {
    return `${this.budgetMs(units)} ms = ${this.factor} x ${this.perUnitMs.toFixed(1)} ms (slowest ${this.what} so far) x ${Math.max(units, 1).toFixed(2)} units`;
  }
}
