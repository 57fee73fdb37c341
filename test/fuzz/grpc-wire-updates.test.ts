// Property-based fuzzing of SubmitUpdate with well-formed protobuf but bad content, over the real
// wire (the normal Federation client, mutual TLS, a live coordinator whose round 1 selected the
// fuzzing site `fz`): (1) broken stream structure — header missing/late/repeated, chunks out of
// order, skipped, oversized, empty, wrong sha256, total_bytes and trailer counts that lie, a
// resume point past what is stored; (2) bad header fields — update ids, tasks of other sites,
// wrong job/round/base version, sizes, hashes, example counts, signatures; (3) bad payloads in a
// correctly signed, correctly hashed stream — NaN/Inf, wrong/missing/extra tensor names, wrong
// shapes, wrong dtypes, broken safetensors headers.
//
// Each case carries exactly one fault (plus benign noise: resent chunks, NaN update_norm, odd
// metadata) and must end with the catalogued FEDLORA_ERR_* code of that fault and a message that
// names the field or tensor. No case is ever accepted; after each family the coordinator's
// state is unchanged (grpc-wire-fixture.ts says what that means), a rejected upload leaves no
// bytes behind, every rejection is audited, and a valid upload from another site still goes in.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { createHash } from 'node:crypto';
import { AuditLog } from '../../shared/audit.ts';
import { ERRORS, fromGrpcError, type ErrorCode } from '../../shared/errors.ts';
import type { UpdateHeader, UpdateMessage, Chunk } from '../../shared/proto.ts';
import { floatToBf16, floatToHalf } from '../../shared/safetensors.ts';
import { fakeDelta } from '../coordinator/helpers.ts';
import { signFor, sha256Hex, submit } from '../security/helpers.ts';
import { wireFixture, stillServes, expectSameState, JOB, SA_JOB, MAX_UPDATE_BYTES, type WireFixture } from './grpc-wire-fixture.ts';

const RUNS = Number(process.env.FEDLORA_FUZZ_RUNS ?? 1000);
let fx: WireFixture;
beforeAll(async () => {
  fx = await wireFixture();
});
afterAll(async () => fx?.close());

interface Expect { code: ErrorCode; re: RegExp }
const hex = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const hdr = (m: UpdateMessage[]) => (m[0] as { header: UpdateHeader }).header;
const chunkOf = (m: UpdateMessage) => (m as { chunk: Chunk }).chunk;

let seq = 0;
const freshId = (p: string) => `${p}-${++seq}`;

/** Submit, then check the outcome against the expected fault; returns the code seen. */
async function refused(msgs: UpdateMessage[], want: Expect[], what: string): Promise<ErrorCode> {
  let res: unknown;
  try {
    res = await submit(fx.clients.fz, msgs);
  } catch (e) {
    const err = e as ReturnType<typeof fromGrpcError> & { grpcCode: number };
    expect(err.code, `${what}: unexpected internal error ${err.message}`).not.toBe('FEDLORA_ERR_INTERNAL');
    expect(err.grpcCode, `${what}: gRPC status of ${err.code}`).toBe(ERRORS[err.code].grpc);
    const hit = want.find((w) => w.code === err.code && w.re.test(err.message));
    expect(hit, `${what}: got ${err.code}: ${err.message.slice(0, 300)}; expected ${want.map((w) => `${w.code} ~ ${w.re}`).join(' | ')}`).toBeTruthy();
    return err.code;
  }
  throw new Error(`${what}: accepted (${JSON.stringify(res)}), expected ${want.map((w) => w.code).join(' | ')}`);
}

// ---- benign noise (must not change the verdict) ------------------------------------------------
const headerNoise = fc.record({
  updateNorm: fc.constantFrom(0, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, -1, 1e308, 2.5),
  clipped: fc.boolean(),
  metadataJson: fc.oneof(fc.constant(Buffer.alloc(0)), fc.uint8Array({ maxLength: 2048 }).map((b) => Buffer.from(b)), fc.json().map((s) => Buffer.from(s))),
  payloadKind: fc.oneof(fc.constantFrom('delta', '', 'weights', 'masked'), fc.string({ maxLength: 30 }).filter((s) => s !== 'local_adapter')),
});
type HeaderNoise = typeof headerNoise extends fc.Arbitrary<infer T> ? T : never;

function withNoise(msgs: UpdateMessage[], n: HeaderNoise, resend: number[]): UpdateMessage[] {
  const out = msgs.map((m) => (m.part === 'header' ? ({ part: 'header', header: { ...hdr([m]), ...n } } as UpdateMessage) : m));
  // a chunk sent again right after itself (a resend after resume) is ignored by the coordinator
  for (const r of [...new Set(resend)].sort((a, b) => b - a)) {
    const at = out.findIndex((m) => m.part === 'chunk' && chunkOf(m).index === r);
    if (at > 0) out.splice(at + 1, 0, out[at]);
  }
  return out;
}

// ---- (1) stream structure -------------------------------------------------------------------------
type StructFault =
  | { f: 'noHeader' } | { f: 'headerLate' } | { f: 'secondHeader'; at: number; otherId: boolean }
  | { f: 'skip'; i: number } | { f: 'swap'; i: number; j: number } | { f: 'offset'; i: number; d: number } | { f: 'index'; i: number; to: number }
  | { f: 'badHash'; i: number; how: 'random' | 'upper' | 'empty' | 'short' } | { f: 'bigChunk'; i: number } | { f: 'grow'; i: number; by: number }
  | { f: 'emptyChunk'; i: number } | { f: 'trailerCount'; d: number } | { f: 'trailerEarly' } | { f: 'totalMore'; k: number } | { f: 'totalLess'; k: number }
  | { f: 'chunkSizeSmaller' } | { f: 'payloadHash' } | { f: 'resumeAhead'; k: number };

const structFault: fc.Arbitrary<StructFault> = fc.oneof(
  fc.constant({ f: 'noHeader' as const }), fc.constant({ f: 'headerLate' as const }),
  fc.record({ f: fc.constant('secondHeader' as const), at: fc.nat(), otherId: fc.boolean() }),
  fc.record({ f: fc.constant('skip' as const), i: fc.nat() }),
  fc.record({ f: fc.constant('swap' as const), i: fc.nat(), j: fc.nat() }),
  fc.record({ f: fc.constant('offset' as const), i: fc.nat(), d: fc.oneof(fc.integer({ min: -100, max: 100 }).filter((d) => d !== 0), fc.constant(2 ** 52)) }),
  fc.record({ f: fc.constant('index' as const), i: fc.nat(), to: fc.oneof(fc.nat(20), fc.constant(2 ** 53 - 1)) }),
  fc.record({ f: fc.constant('badHash' as const), i: fc.nat(), how: fc.constantFrom('random' as const, 'upper' as const, 'empty' as const, 'short' as const) }),
  fc.record({ f: fc.constant('bigChunk' as const), i: fc.nat() }),
  fc.record({ f: fc.constant('grow' as const), i: fc.nat(), by: fc.integer({ min: 1, max: 2048 }) }),
  fc.record({ f: fc.constant('emptyChunk' as const), i: fc.nat() }),
  fc.record({ f: fc.constant('trailerCount' as const), d: fc.oneof(fc.integer({ min: -3, max: 5 }).filter((d) => d !== 0), fc.constant(2 ** 40)) }),
  fc.constant({ f: 'trailerEarly' as const }),
  fc.record({ f: fc.constant('totalMore' as const), k: fc.oneof(fc.integer({ min: 1, max: 5000 }), fc.constant(100_000)) }),
  fc.record({ f: fc.constant('totalLess' as const), k: fc.integer({ min: 1, max: 1500 }) }),
  fc.constant({ f: 'chunkSizeSmaller' as const }),
  fc.constant({ f: 'payloadHash' as const }),
  fc.record({ f: fc.constant('resumeAhead' as const), k: fc.integer({ min: 1, max: 1000 }) }),
);

const ORDER = /chunk \d+ at offset \d+, expected chunk \d+ at offset \d+/;
const TRAILER = /trailer says \d+ chunks, \d+ received/;
const TOO_BIG = /chunk \d+ has \d+ bytes \(chunk size \d+, total \d+\)/;

/** Apply one structural fault; returns the stream and what it must end with. */
function breakStream(msgs: UpdateMessage[], fault: StructFault, bytes: Buffer): { msgs: UpdateMessage[]; want: Expect[] } {
  const h = hdr(msgs);
  const chunks = msgs.slice(1, -1);
  const trailer = msgs[msgs.length - 1];
  const n = chunks.length;
  const setHeader = (over: Partial<UpdateHeader>) => ({ part: 'header', header: { ...h, ...over } }) as UpdateMessage;
  const ch = (i: number, over: Partial<Chunk>) => ({ part: 'chunk', chunk: { ...chunkOf(chunks[i]), ...over } }) as UpdateMessage;
  switch (fault.f) {
    case 'noHeader':
      return { msgs: msgs.slice(1), want: [{ code: 'FEDLORA_ERR_INVALID_ARGUMENT', re: /first message must be the header/ }] };
    case 'headerLate':
      return { msgs: [chunks[0], msgs[0], ...chunks.slice(1), trailer], want: [{ code: 'FEDLORA_ERR_INVALID_ARGUMENT', re: /first message must be the header/ }] };
    case 'secondHeader': {
      const at = 1 + (fault.at % (n + 1)); // after the header, before the trailer
      const second = fault.otherId ? setHeader({ updateId: `${h.updateId}-b` }) : msgs[0];
      return { msgs: [...msgs.slice(0, at), second, ...msgs.slice(at)], want: [{ code: 'FEDLORA_ERR_INVALID_ARGUMENT', re: /a second header in one stream/ }] };
    }
    case 'skip': {
      const i = fault.i % n;
      return { msgs: [msgs[0], ...chunks.filter((_, k) => k !== i), trailer], want: [{ code: 'FEDLORA_ERR_CHUNK_ORDER', re: i === n - 1 ? TRAILER : ORDER }] };
    }
    case 'swap': {
      const i = fault.i % (n - 1);
      const j = i + 1 + (fault.j % (n - 1 - i));
      const c = [...chunks];
      [c[i], c[j]] = [c[j], c[i]];
      return { msgs: [msgs[0], ...c, trailer], want: [{ code: 'FEDLORA_ERR_CHUNK_ORDER', re: ORDER }] };
    }
    case 'offset': {
      const i = fault.i % n;
      const at = chunkOf(chunks[i]).offset + fault.d;
      const c = chunks.map((m, k) => (k === i ? ch(k, { offset: at < 0 ? chunkOf(m).offset + 1 : at }) : m));
      return { msgs: [msgs[0], ...c, trailer], want: [{ code: 'FEDLORA_ERR_CHUNK_ORDER', re: ORDER }, { code: 'FEDLORA_ERR_CHUNK_ORDER', re: TRAILER }] };
    }
    case 'index': {
      const i = fault.i % n;
      const to = fault.to === i ? i + 1 : fault.to;
      // an index below the committed count reads as a resend (ignored): the gap shows up at the next chunk or the trailer
      const c = chunks.map((m, k) => (k === i ? ch(k, { index: to }) : m));
      return { msgs: [msgs[0], ...c, trailer], want: [{ code: 'FEDLORA_ERR_CHUNK_ORDER', re: ORDER }, { code: 'FEDLORA_ERR_CHUNK_ORDER', re: TRAILER }] };
    }
    case 'badHash': {
      const i = fault.i % n;
      const good = chunkOf(chunks[i]).sha256;
      const bad = { random: hex(Buffer.from(`x${i}${good}`)), upper: good.toUpperCase(), empty: '', short: good.slice(0, 63) }[fault.how];
      return { msgs: [msgs[0], ...chunks.map((m, k) => (k === i ? ch(k, { sha256: bad }) : m)), trailer], want: [{ code: 'FEDLORA_ERR_CHUNK_HASH', re: /chunk \d+ sha256 mismatch/ }] };
    }
    case 'bigChunk': {
      const i = fault.i % (n - 1);
      const data = Buffer.concat([Buffer.from(chunkOf(chunks[i]).data), Buffer.from(chunkOf(chunks[i + 1]).data)]);
      const c = [...chunks.slice(0, i), ch(i, { data, sha256: hex(data) }), ...chunks.slice(i + 2)];
      return { msgs: [msgs[0], ...c, trailer], want: [{ code: 'FEDLORA_ERR_CHUNK_SIZE', re: TOO_BIG }] };
    }
    case 'grow': {
      const i = fault.i % n;
      const data = Buffer.concat([Buffer.from(chunkOf(chunks[i]).data), Buffer.alloc(fault.by, 7)]);
      return { msgs: [msgs[0], ...chunks.map((m, k) => (k === i ? ch(k, { data, sha256: hex(data) }) : m)), trailer], want: [{ code: 'FEDLORA_ERR_CHUNK_SIZE', re: TOO_BIG }] };
    }
    case 'emptyChunk': {
      const i = fault.i % n;
      const c = [...chunks];
      c.splice(i, 0, ch(i, { data: Buffer.alloc(0), sha256: hex(Buffer.alloc(0)) }));
      return { msgs: [msgs[0], ...c, trailer], want: [{ code: 'FEDLORA_ERR_CHUNK_SIZE', re: /has 0 bytes/ }] };
    }
    case 'trailerCount':
      return { msgs: [msgs[0], ...chunks, { part: 'trailer', trailer: { chunks: Math.max(0, n + fault.d) === n ? n + 1 : Math.max(0, n + fault.d) } } as UpdateMessage], want: [{ code: 'FEDLORA_ERR_CHUNK_ORDER', re: TRAILER }] };
    case 'trailerEarly':
      return { msgs: [msgs[0], trailer, ...chunks], want: [{ code: 'FEDLORA_ERR_CHUNK_ORDER', re: TRAILER }] };
    case 'totalMore':
      return { msgs: [setHeader({ totalBytes: h.totalBytes + fault.k }), ...chunks, trailer], want: [{ code: 'FEDLORA_ERR_CHUNK_SIZE', re: /\d+ of \d+ bytes received/ }] };
    case 'totalLess':
      return { msgs: [setHeader({ totalBytes: h.totalBytes - Math.min(fault.k, h.totalBytes - 1) }), ...chunks, trailer], want: [{ code: 'FEDLORA_ERR_CHUNK_SIZE', re: TOO_BIG }] };
    case 'chunkSizeSmaller':
      return { msgs: [setHeader({ chunkSize: Math.floor(h.chunkSize / 2) }), ...chunks, trailer], want: [{ code: 'FEDLORA_ERR_CHUNK_SIZE', re: TOO_BIG }] };
    case 'payloadHash': {
      // the header announces (and signs) the hash of other bytes: the whole-payload check fails
      const sha = hex(Buffer.concat([bytes, Buffer.from([1])]));
      const f = { updateId: h.updateId, jobId: JOB, round: 1, baseVersion: 0, sha256: sha, numExamples: h.numExamples };
      return { msgs: [setHeader({ sha256: sha, signature: signFor(fx.live.siteDirs.fz, f) }), ...chunks, trailer], want: [{ code: 'FEDLORA_ERR_UPDATE_HASH', re: /payload sha256 [0-9a-f]{64} != header [0-9a-f]{64}/ }] };
    }
    case 'resumeAhead':
      return { msgs: [setHeader({ resumeFromChunk: fault.k }), ...chunks, trailer], want: [{ code: 'FEDLORA_ERR_CHUNK_ORDER', re: /resume_from_chunk \d+, but only 0 chunks are persisted/ }] };
  }
}

// ---- (2) header fields -----------------------------------------------------------------------------
type HeaderFault =
  | { f: 'updateId'; v: string } | { f: 'replayOther' } | { f: 'task'; v: string } | { f: 'job'; v: string } | { f: 'round'; v: number } | { f: 'base'; v: number }
  | { f: 'total'; v: number } | { f: 'chunkSize'; v: number } | { f: 'sha'; how: 'upper' | 'short' | 'nonhex' | 'empty' } | { f: 'examples' }
  | { f: 'sigEmpty' } | { f: 'sigRandom'; v: Uint8Array } | { f: 'sigOther' } | { f: 'sigFields'; examples: number } | { f: 'resume'; v: number } | { f: 'local' };

const badId = fc.oneof(
  fc.constantFrom('', ' ', 'a b', '../../etc/passwd', 'x'.repeat(129), 'ü', 'id\n', 'id/slash', 'nul\u0000'),
  fc.string({ minLength: 1, maxLength: 200 }).filter((s) => !/^[A-Za-z0-9._-]{1,128}$/.test(s)),
);
const headerFault: fc.Arbitrary<HeaderFault> = fc.oneof(
  fc.record({ f: fc.constant('updateId' as const), v: badId }),
  fc.constant({ f: 'replayOther' as const }),
  fc.record({ f: fc.constant('task' as const), v: fc.oneof(fc.constantFrom('OK1', 'OK2', 'SA', '', 'no-such-task'), fc.string({ maxLength: 60 })) }),
  fc.record({ f: fc.constant('job' as const), v: fc.oneof(fc.constant(SA_JOB), fc.string({ maxLength: 40 }).filter((s) => s !== JOB)) }),
  fc.record({ f: fc.constant('round' as const), v: fc.constantFrom(0, 2, 3, 2 ** 32 - 1) }),
  fc.record({ f: fc.constant('base' as const), v: fc.constantFrom(1, 2, 7, 2 ** 32 - 1) }),
  fc.record({ f: fc.constant('total' as const), v: fc.constantFrom(0, MAX_UPDATE_BYTES + 1, 2 ** 40, 2 ** 53 - 1) }),
  fc.record({ f: fc.constant('chunkSize' as const), v: fc.constantFrom(0, 4 * 1024 * 1024 + 1, 2 ** 32 - 1) }),
  fc.record({ f: fc.constant('sha' as const), how: fc.constantFrom('upper' as const, 'short' as const, 'nonhex' as const, 'empty' as const) }),
  fc.constant({ f: 'examples' as const }),
  fc.constant({ f: 'sigEmpty' as const }),
  fc.record({ f: fc.constant('sigRandom' as const), v: fc.uint8Array({ minLength: 1, maxLength: 120 }) }),
  fc.constant({ f: 'sigOther' as const }),
  fc.record({ f: fc.constant('sigFields' as const), examples: fc.integer({ min: 1, max: 1000 }).filter((x) => x !== 8) }),
  fc.record({ f: fc.constant('resume' as const), v: fc.oneof(fc.integer({ min: 1, max: 10 }), fc.constant(2 ** 53 - 1)) }),
  fc.constant({ f: 'local' as const }),
);

function breakHeader(msgs: UpdateMessage[], fault: HeaderFault): { msgs: UpdateMessage[]; want: Expect[] } {
  const h = { ...hdr(msgs) };
  const sign = (site = 'fz', over: Partial<{ numExamples: number }> = {}) =>
    signFor(fx.live.siteDirs[site], { updateId: h.updateId, jobId: h.jobId, round: h.round, baseVersion: h.baseVersion, sha256: h.sha256, numExamples: over.numExamples ?? h.numExamples });
  let want: Expect[];
  switch (fault.f) {
    case 'updateId': h.updateId = fault.v; want = [{ code: 'FEDLORA_ERR_INVALID_ARGUMENT', re: /UpdateHeader\.update_id .* must match/s }]; break;
    case 'replayOther': h.updateId = fx.okUpdateId; want = [{ code: 'FEDLORA_ERR_REPLAY', re: /update ok1-good-update was already used/ }]; break;
    case 'task': {
      const v = fault.v === 'OK1' ? fx.tasks.ok1.task_id : fault.v === 'OK2' ? fx.tasks.ok2.task_id : fault.v === 'SA' ? fx.saTasks.fz.task_id : fault.v === fx.tasks.fz.task_id ? `${fault.v}x` : fault.v;
      h.taskId = v;
      want = v === fx.saTasks.fz.task_id ? [{ code: 'FEDLORA_ERR_UPDATE_INVALID', re: /UpdateHeader: task \S+ is job fz-sa round 1, header says job fz-job round 1/ }] : [{ code: 'FEDLORA_ERR_NOT_SELECTED', re: /UpdateHeader\.task_id: site fz has no task/ }];
      break;
    }
    case 'job': h.jobId = fault.v; want = [{ code: 'FEDLORA_ERR_UPDATE_INVALID', re: /UpdateHeader: task \S+ is job fz-job round 1, header says job/ }]; break;
    case 'round': h.round = fault.v; want = [{ code: 'FEDLORA_ERR_UPDATE_INVALID', re: /header says job fz-job round \d+/ }]; break;
    case 'base': h.baseVersion = fault.v; want = [{ code: 'FEDLORA_ERR_UPDATE_INVALID', re: /UpdateHeader\.base_version: \d+, but round 1 trains from version 0/ }]; break;
    case 'total': h.totalBytes = fault.v; want = [{ code: 'FEDLORA_ERR_CHUNK_SIZE', re: /UpdateHeader\.total_bytes: \d+ \(limit \d+\)/ }]; break;
    case 'chunkSize': h.chunkSize = fault.v; want = [{ code: 'FEDLORA_ERR_CHUNK_SIZE', re: /UpdateHeader\.chunk_size: \d+/ }]; break;
    case 'sha':
      h.sha256 = { upper: h.sha256.toUpperCase(), short: h.sha256.slice(1), nonhex: `${h.sha256.slice(0, 63)}g`, empty: '' }[fault.how];
      want = [{ code: 'FEDLORA_ERR_INVALID_ARGUMENT', re: /UpdateHeader\.sha256: expected 64 lowercase hex characters/ }];
      break;
    case 'examples': h.numExamples = 0; want = [{ code: 'FEDLORA_ERR_UPDATE_INVALID', re: /UpdateHeader\.num_examples: 0, must be > 0/ }]; break;
    case 'sigEmpty': h.signature = Buffer.alloc(0); return { msgs: [{ part: 'header', header: h } as UpdateMessage, ...msgs.slice(1)], want: [{ code: 'FEDLORA_ERR_SIGNATURE', re: /UpdateHeader\.signature is empty/ }] };
    case 'sigRandom': h.signature = Buffer.from(fault.v); return { msgs: [{ part: 'header', header: h } as UpdateMessage, ...msgs.slice(1)], want: [{ code: 'FEDLORA_ERR_SIGNATURE', re: /UpdateHeader\.signature does not verify/ }] };
    case 'sigOther': h.signature = sign('ok1'); return { msgs: [{ part: 'header', header: h } as UpdateMessage, ...msgs.slice(1)], want: [{ code: 'FEDLORA_ERR_SIGNATURE', re: /UpdateHeader\.signature does not verify/ }] };
    case 'sigFields': h.signature = sign('fz', { numExamples: fault.examples }); return { msgs: [{ part: 'header', header: h } as UpdateMessage, ...msgs.slice(1)], want: [{ code: 'FEDLORA_ERR_SIGNATURE', re: /UpdateHeader\.signature does not verify/ }] };
    case 'resume': h.resumeFromChunk = fault.v; want = [{ code: 'FEDLORA_ERR_CHUNK_ORDER', re: /resume_from_chunk \d+, but only 0 chunks are persisted/ }]; break;
    case 'local': h.payloadKind = 'local_adapter'; want = [{ code: 'FEDLORA_ERR_NOT_SELECTED', re: /has no open UPLOAD_LOCAL task/ }]; break;
  }
  h.signature = sign(); // a correct signature over whatever the header now says
  return { msgs: [{ part: 'header', header: h } as UpdateMessage, ...msgs.slice(1)], want };
}

// ---- (3) payloads ------------------------------------------------------------------------------------
interface RawTensor { name: string; dtype: string; shape: number[]; data: Buffer }
type PayloadFault =
  | { f: 'nonfinite'; t: number; e: number; v: number } | { f: 'rename'; t: number; to: string } | { f: 'drop'; t: number } | { f: 'extra'; name: string }
  | { f: 'shape'; t: number; how: 'transpose' | 'flat' | 'lead1' | 'trail1' } | { f: 'dtype'; t: number; to: 'F16' | 'BF16' | 'F64' | 'I32' | 'I64' | 'I16' | 'I8' | 'U8' | 'BOOL' }
  | { f: 'header'; how: 'tooLong' | 'notJson' | 'array' | 'offsets' | 'short' | 'badDtype' | 'random'; junk: string };

function payloadFault(names: string[]): fc.Arbitrary<PayloadFault> {
  const t = fc.nat(names.length - 1);
  const alien = fc.oneof(fc.string({ maxLength: 60 }), fc.constantFrom('base_model.model.model.layers.9.self_attn.q_proj.lora_A.weight', 'lora_A', '', ' ')).filter((s) => !names.includes(s) && s !== '__metadata__');
  return fc.oneof(
    { weight: 3, arbitrary: fc.record({ f: fc.constant('nonfinite' as const), t, e: fc.nat(), v: fc.constantFrom(Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY) }) },
    fc.record({ f: fc.constant('rename' as const), t, to: alien }),
    fc.record({ f: fc.constant('drop' as const), t }),
    fc.record({ f: fc.constant('extra' as const), name: alien }),
    { weight: 2, arbitrary: fc.record({ f: fc.constant('shape' as const), t, how: fc.constantFrom('transpose' as const, 'flat' as const, 'lead1' as const, 'trail1' as const) }) },
    { weight: 2, arbitrary: fc.record({ f: fc.constant('dtype' as const), t, to: fc.constantFrom('F16' as const, 'BF16' as const, 'F64' as const, 'I32' as const, 'I64' as const, 'I16' as const, 'I8' as const, 'U8' as const, 'BOOL' as const) }) },
    { weight: 2, arbitrary: fc.record({ f: fc.constant('header' as const), how: fc.constantFrom('tooLong' as const, 'notJson' as const, 'array' as const, 'offsets' as const, 'short' as const, 'badDtype' as const, 'random' as const), junk: fc.string({ minLength: 1, maxLength: 200 }) }) },
  );
}

function encodeRaw(ts: RawTensor[]): Buffer {
  const header: Record<string, unknown> = Object.create(null); // a tensor may be called "__proto__" 
  let off = 0;
  for (const t of ts) {
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + t.data.length] };
    off += t.data.length;
  }
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([len, json, ...ts.map((t) => t.data)]);
}

function badPayload(fault: PayloadFault): { bytes: Buffer; want: Expect[] } {
  const flat = fakeDelta(fx.layout, 'fz', 1);
  const entries = fx.layout.entries;
  const quoted = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const tensors = (): RawTensor[] => entries.map((e) => ({ name: e.name, dtype: 'F32', shape: [...e.shape], data: Buffer.from(new Float32Array(flat.subarray(e.offset, e.offset + e.length)).buffer) }));
  const NOT_ST = { code: 'FEDLORA_ERR_UPDATE_INVALID' as const, re: /^update [\w.-]+: not a safetensors file: (?!.*\/tmp)/ };
  const ts = tensors();
  switch (fault.f) {
    case 'nonfinite': {
      const e = entries[fault.t];
      const i = fault.e % e.length;
      ts[fault.t].data.writeFloatLE(fault.v, i * 4);
      return { bytes: encodeRaw(ts), want: [{ code: 'FEDLORA_ERR_UPDATE_NONFINITE', re: new RegExp(`tensor "${quoted(e.name)}" element ${i} is (NaN|Infinity|-Infinity)`) }] };
    }
    case 'rename': ts[fault.t].name = fault.to; return { bytes: encodeRaw(ts), want: [{ code: 'FEDLORA_ERR_UPDATE_INVALID', re: /unexpected tensor ".*" \(not in the job's adapter layout\)/s }] };
    case 'drop': ts.splice(fault.t, 1); return { bytes: encodeRaw(ts), want: [{ code: 'FEDLORA_ERR_UPDATE_INVALID', re: new RegExp(`missing tensor "${quoted(entries[fault.t].name)}"`) }] };
    case 'extra': ts.push({ name: fault.name, dtype: 'F32', shape: [2], data: Buffer.alloc(8) }); return { bytes: encodeRaw(ts), want: [{ code: 'FEDLORA_ERR_UPDATE_INVALID', re: /unexpected tensor ".*" \(not in the job's adapter layout\)/s }] };
    case 'shape': {
      const t = ts[fault.t];
      const [a, b] = t.shape;
      t.shape = { transpose: a === b ? [a, b, 1] : [b, a], flat: [a * b], lead1: [1, a, b], trail1: [a, b, 1] }[fault.how];
      return { bytes: encodeRaw(ts), want: [{ code: 'FEDLORA_ERR_SHAPE', re: new RegExp(`tensor "${quoted(t.name)}" has shape \\[[\\d,]*\\], expected \\[${a},${b}\\]`) }] };
    }
    case 'dtype': {
      const t = ts[fault.t];
      const v = new Float32Array(t.data.buffer.slice(t.data.byteOffset, t.data.byteOffset + t.data.length));
      const width = { F16: 2, BF16: 2, F64: 8, I32: 4, I64: 8, I16: 2, I8: 1, U8: 1, BOOL: 1 }[fault.to];
      const out = Buffer.alloc(v.length * width);
      v.forEach((x, i) => {
        if (fault.to === 'F16') out.writeUInt16LE(floatToHalf(x), i * 2);
        else if (fault.to === 'BF16') out.writeUInt16LE(floatToBf16(x), i * 2);
        else if (fault.to === 'F64') out.writeDoubleLE(x, i * 8);
        else if (fault.to === 'I32') out.writeInt32LE(Math.round(x * 1000), i * 4);
        else if (fault.to === 'I64') out.writeBigInt64LE(BigInt(Math.round(x * 1000)), i * 8);
        else if (fault.to === 'I16') out.writeInt16LE(Math.round(x * 1000), i * 2);
        else out.writeUInt8(x > 0 ? 1 : 0, i);
      });
      t.dtype = fault.to;
      t.data = out;
      return { bytes: encodeRaw(ts), want: [{ code: 'FEDLORA_ERR_UNSUPPORTED_DTYPE', re: new RegExp(`tensor "${quoted(t.name)}" has dtype ${fault.to}, expected F32`) }] };
    }
    case 'header': {
      const good = encodeRaw(ts);
      const n = Number(good.readBigUInt64LE(0));
      const withHeader = (json: Buffer) => {
        const len = Buffer.alloc(8);
        len.writeBigUInt64LE(BigInt(json.length));
        return Buffer.concat([len, json, good.subarray(8 + n)]);
      };
      const bytes = {
        tooLong: (() => { const b = Buffer.from(good); b.writeBigUInt64LE(BigInt(good.length) + BigInt(fault.junk.length), 0); return b; })(),
        notJson: withHeader(Buffer.from(`{${fault.junk}`)),
        array: withHeader(Buffer.from(JSON.stringify([fault.junk]))),
        offsets: (() => { const j = JSON.parse(good.subarray(8, 8 + n).toString()); j[entries[0].name].data_offsets = [0, good.length * 2]; return withHeader(Buffer.from(JSON.stringify(j))); })(),
        short: good.subarray(0, 1 + (fault.junk.length % 7)),
        badDtype: (() => { const j = JSON.parse(good.subarray(8, 8 + n).toString()); j[entries[0].name].dtype = `X${fault.junk.slice(0, 8)}`; return withHeader(Buffer.from(JSON.stringify(j))); })(),
        random: Buffer.from(`${fault.junk}${fault.junk}`.repeat(3)),
      }[fault.how];
      // '{' + junk can happen to be a JSON object (e.g. junk = '}'): then the tensors are missing
      return { bytes, want: [NOT_ST, ...(fault.how === 'notJson' ? [{ code: 'FEDLORA_ERR_UPDATE_INVALID' as const, re: /missing tensor|unexpected tensor/ }] : [])] };
    }
  }
}

// ---- the families ------------------------------------------------------------------------------------
async function family(name: string, arb: fc.Arbitrary<() => { msgs: UpdateMessage[]; want: Expect[]; id: string }>, runs = RUNS): Promise<Map<string, ErrorCode>> {
  const before = fx.snapshot();
  const codes = new Map<string, ErrorCode>();
  await fc.assert(
    fc.asyncProperty(arb, async (make) => {
      const { msgs, want, id } = make();
      codes.set(id, await refused(msgs, want, `${name} ${id}`));
      const row = fx.live.coord.store.update(id);
      if (row?.site_id === 'fz') expect(row.status).not.toBe('accepted');
    }),
    { numRuns: runs },
  );
  await fx.settled();
  expectSameState(before, fx.snapshot(), name);
  fx.checkSpoolFiles();
  return codes;
}

describe('fuzz: SubmitUpdate messages with bad structure, header fields and payloads (mTLS, live coordinator)', () => {
  it('(1) broken stream structure: the fault\'s code and message, never accepted, nothing changed', async () => {
    const codes = await family('stream structure', fc.tuple(structFault, headerNoise, fc.array(fc.nat(7), { maxLength: 2 }), fc.constantFrom(256, 512, 1024)).map(([fault, noise, resend, cs]) => () => {
      const id = freshId('st');
      const { msgs, bytes } = fx.goodStream('fz', id, undefined, cs);
      const broken = breakStream(withNoise(msgs, noise, []), fault, Buffer.from(bytes));
      // resends (benign) only where the fault leaves the chunk order intact
      return { msgs: ['noHeader', 'headerLate', 'swap', 'index', 'skip', 'offset', 'trailerEarly'].includes(fault.f) ? broken.msgs : withNoise(broken.msgs, noise, resend), want: broken.want, id };
    }));
    const kinds = new Set(codes.values());
    for (const c of ['FEDLORA_ERR_INVALID_ARGUMENT', 'FEDLORA_ERR_CHUNK_ORDER', 'FEDLORA_ERR_CHUNK_HASH', 'FEDLORA_ERR_CHUNK_SIZE', 'FEDLORA_ERR_UPDATE_HASH']) expect(kinds.has(c as ErrorCode), c).toBe(true);
    // a broken stream leaves at most a resumable upload (all its bytes, when only the trailer was
    // wrong), never more bytes than its header announced
    expect(fx.live.coord.store.db.prepare(`SELECT COUNT(*) AS n FROM updates WHERE site_id = 'fz' AND received_bytes > size`).get()).toEqual({ n: 0 });
  });

  it('(2) bad header fields: refused at admission with the field named, nothing stored', async () => {
    const codes = await family('header fields', fc.tuple(headerFault, headerNoise).map(([fault, noise]) => () => {
      const id = freshId('hd');
      const { msgs } = fx.goodStream('fz', id);
      const broken = breakHeader(withNoise(msgs, noise, []), fault);
      return { ...broken, id: hdr(broken.msgs).updateId };
    }));
    // refused headers store no byte: a row exists only for signature failures (so that id stays
    // refused: 'rejected') and for a resume point past the stored chunks (the header itself was
    // admitted: an empty upload the site may resume from chunk 0)
    for (const [id, code] of codes) {
      const row = fx.live.coord.store.update(id);
      if (code === 'FEDLORA_ERR_SIGNATURE') expect(row).toMatchObject({ status: 'rejected', received_bytes: 0 });
      else if (code === 'FEDLORA_ERR_CHUNK_ORDER') expect(row).toMatchObject({ status: 'receiving', received_bytes: 0, received_chunks: 0 });
      else if (id !== fx.okUpdateId && /^hd-\d+$/.test(id)) expect(row, `${id} ${code}`).toBeUndefined();
    }
  });

  it('(3) bad payloads in a valid, signed stream: rejected with the tensor named, audited, no bytes kept', async () => {
    const names = fx.layout.entries.map((e) => e.name);
    const codes = await family('payload content', fc.tuple(payloadFault(names), headerNoise, fc.constantFrom(512, 1024, 4096)).map(([fault, noise, cs]) => () => {
      const id = freshId('pl');
      const { bytes, want } = badPayload(fault);
      const { msgs } = fx.goodStream('fz', id, bytes, cs);
      return { msgs: withNoise(msgs, noise, []), want, id };
    }));
    const kinds = new Set(codes.values());
    for (const c of ['FEDLORA_ERR_UPDATE_INVALID', 'FEDLORA_ERR_UPDATE_NONFINITE', 'FEDLORA_ERR_SHAPE', 'FEDLORA_ERR_UNSUPPORTED_DTYPE']) expect(kinds.has(c as ErrorCode), c).toBe(true);
    // every rejection is a 'rejected' row with its reason and an update_rejected audit entry with the same code
    const audited = new Map(new AuditLog(fx.live.coord.store.db).list({ action: 'update_rejected' }).map((e) => [e.subject, e.details.code]));
    for (const [id, code] of codes) {
      expect(fx.live.coord.store.update(id)).toMatchObject({ status: 'rejected', reason: expect.stringContaining(code) });
      expect(audited.get(id), id).toBe(code);
    }
  });

  it('(4) one update on concurrent streams (a retry while the first is still being verified): the first verdict, never an internal error', async () => {
    // regression: the second finish used to read the spool the first had just removed or renamed (ENOENT -> FEDLORA_ERR_INTERNAL)
    const names = fx.layout.entries.map((e) => e.name);
    const before = fx.snapshot();
    await fc.assert(
      fc.asyncProperty(payloadFault(names), fc.integer({ min: 2, max: 4 }), fc.constantFrom(512, 1024), async (fault, n, cs) => {
        const id = freshId('cc');
        const { bytes, want } = badPayload(fault);
        const { msgs } = fx.goodStream('fz', id, bytes, cs);
        const seen = await Promise.all(Array.from({ length: n }, () => submit(fx.clients.fz, msgs).then(() => 'accepted', (e) => e as { code: ErrorCode; message: string })));
        const verdicts = seen.filter((x): x is { code: ErrorCode; message: string } => typeof x !== 'string');
        expect(verdicts.length, id).toBe(n);
        // one stream gets the verdict itself, the others the verdict or "was rejected: <verdict>"
        expect(verdicts.some((v) => want.some((w) => w.code === v.code && w.re.test(v.message))), JSON.stringify(verdicts)).toBe(true);
        for (const v of verdicts) {
          expect(v.code, v.message).not.toBe('FEDLORA_ERR_INTERNAL');
          if (!want.some((w) => w.code === v.code)) expect(`${v.code}: ${v.message}`).toMatch(new RegExp(`^FEDLORA_ERR_UPDATE_INVALID: update ${id} (was|is) rejected: FEDLORA_ERR_`));
        }
        expect(fx.live.coord.store.update(id)?.status).toBe('rejected');
      }),
      { numRuns: Math.max(100, Math.floor(RUNS / 5)) },
    );
    expectSameState(before, fx.snapshot(), 'concurrent streams');
    fx.checkSpoolFiles();
  });

  it('a valid upload from another selected site is still accepted; fz has no accepted update', async () => {
    await stillServes(fx, 'ok2', 'ok2-after-update-fuzz');
    expect(fx.live.coord.store.db.prepare(`SELECT COUNT(*) AS n FROM updates WHERE site_id = 'fz' AND status = 'accepted'`).get()).toEqual({ n: 0 });
    expect(fx.live.coord.store.currentRound(JOB)).toMatchObject({ round: 1, state: 'open' });
    // fz itself is not locked out: its own valid update (fresh id) goes in once the fuzzing is
    // over, sent on three streams at once: each is told it is complete, and it is stored once
    const { msgs } = fx.goodStream('fz', 'fz-finally-valid', undefined, 512);
    const res = await Promise.all([1, 2, 3].map(() => submit(fx.clients.fz, msgs)));
    for (const r of res) expect(r).toMatchObject({ complete: true, updateId: 'fz-finally-valid', sha256: sha256Hex(fx.goodBytes('fz')) });
    expect(fx.live.coord.store.db.prepare(`SELECT COUNT(*) AS n FROM updates WHERE site_id = 'fz' AND status = 'accepted'`).get()).toEqual({ n: 1 });
  });
});
