// The site side of secure aggregation over the Federation SecAgg RPC (stage flow in
// coordinator/secagg/README.md). The agent calls runSecAggSite INSTEAD of the plain upload when
// task.privacy.secureAggregation is true: only the masked, quantised vector leaves the site; the
// secret keys and the self-mask seed stay in this function's memory.
//
//   config -> (pack the coordinator's ranges, DP-clip, append slots) -> advertise (poll: roster)
//   -> share (poll: inbox) -> masked chunks (each acknowledged) -> unmask (poll: survivor list,
//   then send shares; acknowledged) -> done.
// A site that stops after `masked` is still summed (the others' shares reveal its self mask);
// one that stops before is dropped (its pairwise masks are removed), never both.
import { createHash } from 'node:crypto';
import { fail, isFedloraError, type FedloraError } from '../../shared/errors.ts';
import { advertiseKeys, maskInput, shareKeys, unmaskShares, type SiteSecAggState } from '../../shared/secagg/protocol.ts';
import { clipL2InPlace } from '../../shared/secagg/quantize.ts';
import {
  EXAMPLES_CAP, EXTRA_SLOTS,
  type AdvertiseReply, type MaskedChunkReply, type SecAggRoundConfig, type ShareReply, type UnmaskReply,
} from '../../shared/secagg/messages.ts';
import type { FederationWire } from './wire.ts';

export interface SecAggSiteOptions {
  jobId: string;
  round: number;
  /** This site's id (as in its certificate). */
  siteId: string;
  /** The trainable delta (local - global) in the job's UPDATE layout: the update tensors in
   *  sorted-name order (shared/tensors.ts layoutOf/flatten), i.e. exactly the tensors the plain
   *  upload would carry (only lora_B with lora.freeze_a). Not modified. */
  update: Float32Array;
  /** Examples trained on; summed under the mask (capped at EXAMPLES_CAP) for the manifest. */
  numExamples?: number;
  /** Optional check: refuse unless the coordinator's per-coordinate clip range equals this. */
  clipRange?: number;
  /** Site policy: refuse a round whose threshold t is below this. */
  threshold?: number;
  pollMs?: number;
  /** Give up (FEDLORA_ERR_SECAGG) after this time (the task's deadline_unix_ms). */
  deadlineUnixMs: number;
  signal?: AbortSignal;
}

export interface SecAggSiteResult {
  attempt: number;
  dim: number;
  threshold: number;
  survivors: string[];
  dropped: string[];
  /** L2 norm of the packed trainable vector before DP clipping, and whether it was clipped. */
  l2Norm: number;
  l2Clipped: boolean;
  /** Coordinates outside [-clipRange, clipRange] (clipped by the quantiser). */
  clippedCoordinates: number;
  /** Bytes of masked input sent (for the egress audit). */
  maskedBytes: number;
  maskedSha256: string;
}

type Wire = Pick<FederationWire, 'secAgg'>;

const sleep = (ms: number, signal?: AbortSignal) => new Promise<void>((resolve, reject) => {
  if (signal?.aborted) return reject(signal.reason ?? fail('FEDLORA_ERR_SECAGG', 'secagg: aborted'));
  const t = setTimeout(() => { signal?.removeEventListener('abort', onAbort); resolve(); }, ms);
  const onAbort = () => { clearTimeout(t); reject(signal!.reason ?? fail('FEDLORA_ERR_SECAGG', 'secagg: aborted')); };
  signal?.addEventListener('abort', onAbort, { once: true });
});

/** Build the vector the site masks: the coordinator's ranges packed, L2-clipped (DP), then the
 *  slots [unclipped_bit * c, min(n, cap) / cap * c]. */
export function secAggInput(update: Float32Array, cfg: SecAggRoundConfig, numExamples = 0): { x: Float32Array; l2Norm: number; l2Clipped: boolean; clippedCoordinates: number } {
  if (update.length !== cfg.layoutTotal) {
    throw fail('FEDLORA_ERR_SHAPE', `secagg: the update has ${update.length} elements, the job's update layout has ${cfg.layoutTotal} (pass the delta of the update tensors in sorted-name order)`);
  }
  const P = cfg.dim - cfg.extraSlots.length;
  if (cfg.extraSlots.join(',') !== EXTRA_SLOTS.join(',')) throw fail('FEDLORA_ERR_SECAGG', `secagg: coordinator asks for slots ${cfg.extraSlots.join(',')}, this site knows ${EXTRA_SLOTS.join(',')}`);
  const x = new Float32Array(cfg.dim);
  let o = 0;
  for (const [s, e] of cfg.ranges) {
    if (!(s >= 0 && e <= update.length && s <= e)) throw fail('FEDLORA_ERR_SECAGG', `secagg: coordinator range [${s}, ${e}) is outside the ${update.length}-element update`);
    x.set(update.subarray(s, e), o);
    o += e - s;
  }
  if (o !== P) throw fail('FEDLORA_ERR_SECAGG', `secagg: ranges hold ${o} elements, config says ${P}`);
  const packed = x.subarray(0, P);
  for (let i = 0; i < P; i++) if (!Number.isFinite(packed[i])) throw fail('FEDLORA_ERR_UPDATE_NONFINITE', `secagg: update element ${i} of the masked vector is ${packed[i]}; nothing was sent`);
  let l2Norm: number, l2Clipped = false;
  if (cfg.l2Clip !== null) {
    const c = clipL2InPlace(packed, cfg.l2Clip);
    l2Norm = c.norm;
    l2Clipped = c.unclippedBit === 0;
  } else {
    let s2 = 0;
    for (let i = 0; i < P; i++) s2 += packed[i] * packed[i];
    l2Norm = Math.sqrt(s2);
  }
  let clippedCoordinates = 0;
  for (let i = 0; i < P; i++) if (Math.abs(packed[i]) > cfg.clipRange) clippedCoordinates++;
  x[P] = (l2Clipped ? 0 : 1) * cfg.clipRange;
  x[P + 1] = (Math.min(Math.max(0, numExamples), EXAMPLES_CAP) / EXAMPLES_CAP) * cfg.clipRange;
  return { x, l2Norm, l2Clipped, clippedCoordinates };
}

export async function runSecAggSite(wire: Wire, opts: SecAggSiteOptions): Promise<SecAggSiteResult> {
  const pollMs = opts.pollMs ?? 500;
  const where = `secagg job ${opts.jobId} round ${opts.round}`;

  /** One exchange; transport errors (UNAVAILABLE: coordinator restarting, network) are retried until the deadline. */
  async function call<T>(stage: string, body: unknown): Promise<{ ready: boolean; reply: T }> {
    for (;;) {
      if (opts.signal?.aborted) throw opts.signal.reason ?? fail('FEDLORA_ERR_SECAGG', `${where}: aborted`);
      if (Date.now() > opts.deadlineUnixMs) throw fail('FEDLORA_ERR_SECAGG', `${where}: the round deadline passed during stage ${stage}`);
      try {
        const r = await wire.secAgg({ jobId: opts.jobId, round: opts.round, stage, payload: Buffer.from(JSON.stringify(body), 'utf8') });
        return { ready: r.ready, reply: (r.payload.length ? JSON.parse(Buffer.from(r.payload).toString('utf8')) : {}) as T };
      } catch (e) {
        if (!(isFedloraError(e) && (e as FedloraError).code === 'FEDLORA_ERR_UNAVAILABLE')) throw e;
        await sleep(pollMs, opts.signal);
      }
    }
  }
  async function poll<T>(stage: string, body: unknown): Promise<T> {
    for (;;) {
      const r = await call<T>(stage, body);
      if (r.ready) return r.reply;
      await sleep(pollMs, opts.signal);
    }
  }

  // 1. The round's settings (threshold, clip, ranges) — checked against this site's policy.
  const cfg = (await call<SecAggRoundConfig>('config', {})).reply;
  if (cfg.round !== opts.round || cfg.jobId !== opts.jobId) throw fail('FEDLORA_ERR_SECAGG', `${where}: coordinator sent the config of job ${cfg.jobId} round ${cfg.round}`);
  if (opts.threshold !== undefined && cfg.threshold < opts.threshold) throw fail('FEDLORA_ERR_SECAGG', `${where}: threshold ${cfg.threshold} is below this site's minimum ${opts.threshold}; refusing`);
  if (cfg.threshold < 2) throw fail('FEDLORA_ERR_SECAGG', `${where}: threshold ${cfg.threshold} < 2 would reveal this site's input`);
  if (opts.clipRange !== undefined && opts.clipRange !== cfg.clipRange) throw fail('FEDLORA_ERR_SECAGG', `${where}: coordinator clip range ${cfg.clipRange} differs from the expected ${opts.clipRange}`);
  const input = secAggInput(opts.update, cfg, opts.numExamples);
  const secCfg = { round: cfg.round, threshold: cfg.threshold, clipRange: cfg.clipRange, dim: cfg.dim };
  const attempt = cfg.attempt;

  // 2. Advertise keys; the reply is the roster once the stage closes.
  const adv = advertiseKeys(opts.siteId, secCfg);
  let state: SiteSecAggState = adv.state;
  const { roster } = await poll<AdvertiseReply>('advertise', { attempt, msg: adv.msg });
  if (roster.threshold < 2 || roster.threshold !== cfg.threshold) throw fail('FEDLORA_ERR_SECAGG', `${where}: roster threshold ${roster.threshold} differs from the config's ${cfg.threshold}`);

  // 3. Encrypted shares of the self-mask seed and the mask key; the reply is this site's inbox.
  const sh = shareKeys(state, roster);
  state = sh.state;
  const { inbox } = await poll<ShareReply>('share', { attempt, msg: sh.msg });

  // 4. The masked input, in chunks, each acknowledged (idempotent resend after a lost reply).
  const mk = maskInput(state, inbox, input.x);
  state = mk.state;
  const bytes = Buffer.from(mk.msg.masked, 'base64');
  for (let i = 0; i < cfg.chunks; i++) {
    const part = bytes.subarray(4 * i * cfg.chunkElems, 4 * Math.min(cfg.dim, (i + 1) * cfg.chunkElems));
    const r = await call<MaskedChunkReply>('masked', { attempt, siteId: opts.siteId, index: i, data: part.toString('base64'), sha256: createHash('sha256').update(part).digest('hex') });
    if (!r.ready) throw fail('FEDLORA_ERR_SECAGG', `${where}: masked chunk ${i} was not acknowledged`);
  }

  // 5. Wait for the survivor/dropout lists, answer with the matching shares (never both for a site).
  const { request } = await poll<UnmaskReply>('unmask', { attempt });
  if (!request) throw fail('FEDLORA_ERR_SECAGG', `${where}: the coordinator sent no unmask request`);
  const answer = unmaskShares(state, request);
  const ack = await poll<UnmaskReply>('unmask', { attempt, msg: answer });
  if (ack.accepted === false && !ack.note) throw fail('FEDLORA_ERR_SECAGG', `${where}: unmask shares were refused`);
  return {
    attempt, dim: cfg.dim, threshold: cfg.threshold, survivors: request.survivors, dropped: request.dropped,
    l2Norm: input.l2Norm, l2Clipped: input.l2Clipped, clippedCoordinates: input.clippedCoordinates,
    maskedBytes: bytes.length, maskedSha256: createHash('sha256').update(bytes).digest('hex'),
  };
}
