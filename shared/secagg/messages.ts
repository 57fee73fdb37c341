// The JSON payloads of the Federation SecAgg RPC (proto SecAggMessage.payload / SecAggReply.payload),
// shared by the coordinator (coordinator/secagg/rpc.ts, stages.ts) and the site (site-agent/agent/secagg-client.ts).
// The stage flow is documented in coordinator/secagg/README.md.
import type { AdvertiseMsg, Roster, ShareInbox, ShareKeysMsg, UnmaskRequest, UnmaskSharesMsg } from './protocol.ts';

export const SECAGG_STAGES = ['config', 'advertise', 'share', 'masked', 'unmask', 'status'] as const;

/** Elements per `masked` chunk: 4 MiB of uint32, ~5.6 MB as base64 JSON, under the 8 MiB gRPC limit. */
export const MASK_CHUNK_ELEMS = 1 << 20;
/** Per-coordinate clip range when the job has no DP clip norm (LoRA deltas are far smaller). */
export const DEFAULT_CLIP_RANGE = 1;
/** num_examples is summed through a masked slot as min(n, cap) / cap * clipRange. */
export const EXAMPLES_CAP = 1 << 20;
/** The masked vector is [trainable ranges packed] ++ these slots (each scaled by clipRange). */
export const EXTRA_SLOTS = ['unclipped_bit', 'num_examples'] as const;

/** Reply to `config`: everything a site needs before it advertises keys (fixed when first asked). */
export interface SecAggRoundConfig {
  jobId: string;
  round: number;
  /** The round attempt this config belongs to; every later payload echoes it. */
  attempt: number;
  threshold: number;
  /** Per-coordinate clip range c of the quantiser (= l2Clip with DP, else DEFAULT_CLIP_RANGE). */
  clipRange: number;
  /** DP: the site clips the packed trainable vector to this L2 norm before masking; null without DP. */
  l2Clip: number | null;
  /** Length of the masked vector: packed trainable elements + EXTRA_SLOTS.length. */
  dim: number;
  /** Length of the update vector the site starts from (the job's update layout, sorted tensor names). */
  layoutTotal: number;
  /** [start, end) element ranges of the update layout that are masked (packed end to end, in order). */
  ranges: Array<[number, number]>;
  extraSlots: string[];
  chunkElems: number;
  chunks: number;
  selected: number;
  deadlineMs: number;
}

export interface AttemptPayload { attempt: number }
export interface AdvertisePayload extends AttemptPayload { msg: AdvertiseMsg }
export interface AdvertiseReply { roster: Roster }
export interface SharePayload extends AttemptPayload { msg: ShareKeysMsg }
export interface ShareReply { inbox: ShareInbox }
export interface MaskedChunkPayload extends AttemptPayload {
  siteId: string;
  index: number;
  /** base64 of uint32 LE: elements [index * chunkElems, min(dim, (index + 1) * chunkElems)) */
  data: string;
  /** sha256 hex of the decoded bytes */
  sha256: string;
}
export interface MaskedChunkReply { received: number; chunks: number; complete: boolean }
export interface UnmaskPayload extends AttemptPayload { msg?: UnmaskSharesMsg }
export interface UnmaskReply { request?: UnmaskRequest; accepted?: boolean; note?: string }
export interface StatusReply {
  attempt: number;
  stage: SecAggServerStage;
  roster: string[];
  u2: string[];
  survivors: string[];
  dropped: string[];
  error: string | null;
}

export type SecAggServerStage = 'advertise' | 'share' | 'masked' | 'unmask' | 'done' | 'failed';
