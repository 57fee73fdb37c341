// The suite's time limits, used by vitest.config.ts and by the few tests that need a multiple
// of them. The slowest single test takes about 40 s in a full run on the loaded 2-core
// development machine (a fault test killing and restarting processes); a test or hook gets 3x
// that before it is called stuck. A machine that is busier than that when the run starts
// (1-minute load average per core above 1) stretches every step about in proportion, so the
// limits are multiplied by that ratio, up to 4x. Tests wait for their own work with deadlines
// derived from measured work (work-clock.ts), not with these.
import { availableParallelism, loadavg } from 'node:os';

export const SLOWDOWN = Math.min(4, Math.max(1, loadavg()[0] / availableParallelism()));
export const TEST_TIMEOUT_MS = Math.round(120_000 * SLOWDOWN);
/** After a file ends, its fork gets this long to exit before vitest reports it stuck by name. */
export const TEARDOWN_TIMEOUT_MS = Math.round(10_000 * SLOWDOWN);
