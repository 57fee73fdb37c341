// Secure aggregation (Bonawitz et al. 2017, "Practical Secure Aggregation for Privacy-Preserving
// Machine Learning"), semi-honest server, complete graph, as pure stage functions that the gRPC
// SecAgg RPC carries as JSON messages. Sites authenticate by mutual TLS, so no signatures here.
//
//   site  advertiseKeys  -> AdvertiseMsg                 server collectAdvertise -> Roster (U1)
//   site  shareKeys      -> ShareKeysMsg                 server routeShares      -> ShareInbox per site (U2)
//   site  maskInput      -> MaskedInputMsg               server aggregateMasked  -> masked sum, UnmaskRequest (U3)
//   site  unmaskShares   -> UnmaskSharesMsg              server unmask           -> sum of the U3 inputs
//
// y_u = q(x_u) + PRG(b_u) + sum_{v in U2, v != u} (u < v ? +1 : -1) PRG(s_uv)   (mod 2^32)
// Pairwise masks cancel in the sum over U2; for sites that dropped after sharing keys (U2 \ U3)
// the server reconstructs their mask secret key s_sk from t shares and removes their pairwise
// masks; for survivors it reconstructs b_u and removes the self mask. An honest site never
// gives out both kinds of share for the same peer, so the server never learns one site's x_u.
// What the coordinator stores — masked vectors, encrypted shares — reveals no single input.
import { createCipheriv, createDecipheriv, createPrivateKey, createPublicKey, diffieHellman, randomBytes, type KeyObject } from 'node:crypto';
import { fail } from '../errors.ts';
import { combine, split, type Share } from './shamir.ts';
import { expandMask, hkdf32 } from './prg.ts';
import { dequantizeSum, quantize } from './quantize.ts';

export interface SecAggConfig {
  round: number;
  /** t: shares needed to reconstruct; also the minimum number of sites at every stage. */
  threshold: number;
  /** c: each coordinate is clipped to [-c, c] before quantisation (use the DP clip norm). */
  clipRange: number;
  /** Vector length (elements). */
  dim: number;
}

export interface AdvertiseMsg { siteId: string; cPk: string; sPk: string } // base64url X25519 public keys
export interface Roster { round: number; threshold: number; clipRange: number; dim: number; sites: AdvertiseMsg[] } // sorted by siteId
export interface EncryptedShare { from: string; to: string; ct: string } // base64: iv(12) | ciphertext | tag(16)
export interface ShareKeysMsg { siteId: string; shares: EncryptedShare[] }
export interface ShareInbox { round: number; u2: string[]; shares: EncryptedShare[] }
export interface MaskedInputMsg { siteId: string; masked: string } // base64 of uint32 LE
export interface UnmaskRequest { round: number; survivors: string[]; dropped: string[] }
export interface UnmaskSharesMsg { siteId: string; selfShares: Array<{ of: string; share: Share }>; keyShares: Array<{ of: string; share: Share }> }

/** Site-private state between stages (holds secret keys: keep in memory, never send). */
export interface SiteSecAggState {
  siteId: string;
  cfg: SecAggConfig;
  cKey: { priv: KeyObject; pub: string };
  sKey: { priv: KeyObject; pub: string };
  selfSeed?: Buffer;
  roster?: Roster;
  inbox?: ShareInbox;
  submitted?: boolean;
  /** This site's own shares of its secrets (it is one of the n holders). */
  ownShares?: { b: Share; s: Share };
}

const SALT = (round: number) => `fedlora-secagg-round-${round}`;
const pairInfo = (kind: string, a: string, b: string) => `${kind}|${a < b ? a : b}|${a < b ? b : a}`;

// X25519 keys are made from 32 random bytes (clamped as RFC 7748 and OpenSSL's keygen do) and
// imported, not made by generateKeyPairSync('x25519'): in Node 20 a garbage collection during the
// JWK export of a key from that generator runs the generator job's destructor, which takes the
// mutex the export already holds, and the process deadlocks (a hung site agent or test fork).
const X25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');
function newKeyPair(): { priv: KeyObject; pub: string } {
  const k = randomBytes(32);
  k[0] &= 248;
  k[31] = (k[31] & 127) | 64;
  const priv = createPrivateKey({ key: Buffer.concat([X25519_PKCS8_PREFIX, k]), format: 'der', type: 'pkcs8' });
  k.fill(0);
  return { priv, pub: createPublicKey(priv).export({ format: 'jwk' }).x as string };
}
const pubKey = (x: string): KeyObject => createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x }, format: 'jwk' });
const rawPriv = (k: KeyObject): Buffer => Buffer.from(k.export({ format: 'jwk' }).d as string, 'base64url');
const privFromRaw = (d: Buffer, x: string): KeyObject => createPrivateKey({ key: { kty: 'OKP', crv: 'X25519', d: d.toString('base64url'), x }, format: 'jwk' });
const dh = (priv: KeyObject, pub: string): Buffer => diffieHellman({ privateKey: priv, publicKey: pubKey(pub) });

function checkCfg(cfg: SecAggConfig): void {
  if (!(Number.isInteger(cfg.threshold) && cfg.threshold >= 2)) throw fail('FEDLORA_ERR_SECAGG', `secagg: threshold must be an integer >= 2, got ${cfg.threshold}`);
  if (!(Number.isInteger(cfg.dim) && cfg.dim >= 1)) throw fail('FEDLORA_ERR_SECAGG', `secagg: dim must be an integer >= 1, got ${cfg.dim}`);
  if (!(cfg.clipRange > 0)) throw fail('FEDLORA_ERR_SECAGG', `secagg: clip range must be > 0, got ${cfg.clipRange}`);
}

// ---- site stages ----------------------------------------------------------------------------

export function advertiseKeys(siteId: string, cfg: SecAggConfig): { msg: AdvertiseMsg; state: SiteSecAggState } {
  checkCfg(cfg);
  const cKey = newKeyPair();
  const sKey = newKeyPair();
  return { msg: { siteId, cPk: cKey.pub, sPk: sKey.pub }, state: { siteId, cfg, cKey, sKey } };
}

export function shareKeys(state: SiteSecAggState, roster: Roster): { msg: ShareKeysMsg; state: SiteSecAggState } {
  if (roster.round !== state.cfg.round || roster.threshold !== state.cfg.threshold || roster.dim !== state.cfg.dim || roster.clipRange !== state.cfg.clipRange)
    throw fail('FEDLORA_ERR_SECAGG', `secagg: roster for round ${roster.round} does not match this site's round ${state.cfg.round} settings`);
  const me = roster.sites.find((s) => s.siteId === state.siteId);
  if (!me || me.cPk !== state.cKey.pub || me.sPk !== state.sKey.pub) throw fail('FEDLORA_ERR_SECAGG', `secagg: roster does not carry site ${state.siteId}'s advertised keys`);
  if (roster.sites.length < roster.threshold) throw fail('FEDLORA_ERR_SECAGG', `secagg: roster has ${roster.sites.length} sites, fewer than threshold ${roster.threshold}`);
  const n = roster.sites.length;
  const selfSeed = randomBytes(32);
  const bShares = split(selfSeed, roster.threshold, n);
  const sShares = split(rawPriv(state.sKey.priv), roster.threshold, n);
  const shares: EncryptedShare[] = [];
  roster.sites.forEach((peer, k) => {
    if (peer.siteId === state.siteId) return;
    const key = hkdf32(dh(state.cKey.priv, peer.cPk), SALT(roster.round), pairInfo('enc', state.siteId, peer.siteId));
    const iv = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', key, iv);
    c.setAAD(Buffer.from(`${roster.round}|${state.siteId}|${peer.siteId}`));
    const body = Buffer.concat([c.update(JSON.stringify({ b: bShares[k], s: sShares[k] })), c.final()]);
    shares.push({ from: state.siteId, to: peer.siteId, ct: Buffer.concat([iv, body, c.getAuthTag()]).toString('base64') });
  });
  // a site keeps its own shares too (it is one of the n holders)
  const myIndex = roster.sites.findIndex((s) => s.siteId === state.siteId);
  const own = { b: bShares[myIndex], s: sShares[myIndex] };
  return { msg: { siteId: state.siteId, shares }, state: { ...state, selfSeed, roster, ownShares: own } };
}

function decryptShare(state: SiteSecAggState, e: EncryptedShare): { b: Share; s: Share } {
  const peer = state.roster!.sites.find((s) => s.siteId === e.from);
  if (!peer || e.to !== state.siteId) throw fail('FEDLORA_ERR_SECAGG', `secagg: share from ${e.from} to ${e.to} is not for site ${state.siteId}`);
  const raw = Buffer.from(e.ct, 'base64');
  const key = hkdf32(dh(state.cKey.priv, peer.cPk), SALT(state.cfg.round), pairInfo('enc', state.siteId, e.from));
  try {
    const d = createDecipheriv('aes-256-gcm', key, raw.subarray(0, 12));
    d.setAAD(Buffer.from(`${state.cfg.round}|${e.from}|${e.to}`));
    d.setAuthTag(raw.subarray(raw.length - 16));
    return JSON.parse(Buffer.concat([d.update(raw.subarray(12, raw.length - 16)), d.final()]).toString('utf8'));
  } catch {
    throw fail('FEDLORA_ERR_SECAGG', `secagg: share from ${e.from} does not decrypt (tampered or misrouted)`);
  }
}

function addInto(acc: Uint32Array, m: Uint32Array, sign: 1 | -1): void {
  if (sign === 1) for (let i = 0; i < acc.length; i++) acc[i] = (acc[i] + m[i]) >>> 0;
  else for (let i = 0; i < acc.length; i++) acc[i] = (acc[i] - m[i]) >>> 0;
}

export const selfMaskKey = (seed: Buffer, round: number) => hkdf32(seed, SALT(round), 'self-mask');
const pairMaskKey = (secret: Buffer, round: number, a: string, b: string) => hkdf32(secret, SALT(round), pairInfo('mask', a, b));

/** Quantise x (clipped to [-c, c]) and mask it. `roundingSeed` only for reproducible tests. */
export function maskInput(state: SiteSecAggState, inbox: ShareInbox, x: Float32Array, roundingSeed?: Buffer): { msg: MaskedInputMsg; state: SiteSecAggState } {
  const roster = state.roster;
  if (!roster || !state.selfSeed) throw fail('FEDLORA_ERR_SECAGG', `secagg: site ${state.siteId} must share keys before masking`);
  if (x.length !== state.cfg.dim) throw fail('FEDLORA_ERR_SHAPE', `secagg: input has ${x.length} elements, round dim is ${state.cfg.dim}`);
  if (!inbox.u2.includes(state.siteId)) throw fail('FEDLORA_ERR_SECAGG', `secagg: site ${state.siteId} is not in the round's share set`);
  if (inbox.u2.length < state.cfg.threshold) throw fail('FEDLORA_ERR_SECAGG', `secagg: only ${inbox.u2.length} sites shared keys, threshold ${state.cfg.threshold}`);
  for (const e of inbox.shares) decryptShare(state, e); // fail early on a bad share
  const y = quantize(x, state.cfg.clipRange, roster.sites.length, roundingSeed);
  addInto(y, expandMask(selfMaskKey(state.selfSeed, state.cfg.round), y.length), 1);
  for (const v of inbox.u2) {
    if (v === state.siteId) continue;
    const peer = roster.sites.find((s) => s.siteId === v);
    if (!peer) throw fail('FEDLORA_ERR_SECAGG', `secagg: share set names unknown site ${v}`);
    const m = expandMask(pairMaskKey(dh(state.sKey.priv, peer.sPk), state.cfg.round, state.siteId, v), y.length);
    addInto(y, m, state.siteId < v ? 1 : -1);
  }
  const bytes = Buffer.from(y.buffer, y.byteOffset, y.byteLength);
  return { msg: { siteId: state.siteId, masked: bytes.toString('base64') }, state: { ...state, inbox, submitted: true } };
}

/** Answer the server's unmask request: b-shares of survivors, s_sk-shares of dropped sites —
 *  never both for one site (that would let the server unmask its input). */
export function unmaskShares(state: SiteSecAggState, req: UnmaskRequest): UnmaskSharesMsg {
  const inbox = state.inbox;
  if (!inbox || !state.submitted) throw fail('FEDLORA_ERR_SECAGG', `secagg: site ${state.siteId} has not submitted a masked input this round`);
  if (req.round !== state.cfg.round) throw fail('FEDLORA_ERR_SECAGG', `secagg: unmask request for round ${req.round}, site is in round ${state.cfg.round}`);
  const surv = new Set(req.survivors), drop = new Set(req.dropped);
  for (const u of surv) if (drop.has(u)) throw fail('FEDLORA_ERR_SECAGG', `secagg: server asked for both shares of site ${u}; refusing (would reveal its input)`);
  const u2 = new Set(inbox.u2);
  if (surv.size + drop.size !== u2.size || [...surv, ...drop].some((u) => !u2.has(u))) throw fail('FEDLORA_ERR_SECAGG', 'secagg: survivors + dropped must partition the share set');
  if (surv.size < state.cfg.threshold) throw fail('FEDLORA_ERR_SECAGG', `secagg: only ${surv.size} survivors, threshold ${state.cfg.threshold}; refusing to unmask`);
  const byFrom = new Map<string, { b: Share; s: Share }>([[state.siteId, state.ownShares!]]);
  for (const e of inbox.shares) byFrom.set(e.from, decryptShare(state, e));
  const selfShares: UnmaskSharesMsg['selfShares'] = [];
  const keyShares: UnmaskSharesMsg['keyShares'] = [];
  for (const [from, sh] of byFrom) {
    if (surv.has(from)) selfShares.push({ of: from, share: sh.b });
    else if (drop.has(from)) keyShares.push({ of: from, share: sh.s });
  }
  return { siteId: state.siteId, selfShares, keyShares };
}

// ---- server stages --------------------------------------------------------------------------

export function collectAdvertise(cfg: SecAggConfig, msgs: AdvertiseMsg[]): Roster {
  checkCfg(cfg);
  const ids = new Set<string>();
  for (const m of msgs) {
    if (ids.has(m.siteId)) throw fail('FEDLORA_ERR_SECAGG', `secagg: site ${m.siteId} advertised keys twice`);
    ids.add(m.siteId);
    if (m.cPk === m.sPk) throw fail('FEDLORA_ERR_SECAGG', `secagg: site ${m.siteId} reused one key for both purposes`);
    try { pubKey(m.cPk); pubKey(m.sPk); } catch { throw fail('FEDLORA_ERR_SECAGG', `secagg: site ${m.siteId} advertised an invalid X25519 public key`); }
  }
  if (msgs.length < cfg.threshold) throw fail('FEDLORA_ERR_SECAGG', `secagg: ${msgs.length} sites advertised keys, threshold ${cfg.threshold}`);
  return { round: cfg.round, threshold: cfg.threshold, clipRange: cfg.clipRange, dim: cfg.dim, sites: [...msgs].sort((a, b) => (a.siteId < b.siteId ? -1 : 1)) };
}

/** Route encrypted shares to their recipients. U2 = sites that sent shares to everyone. */
export function routeShares(roster: Roster, msgs: ShareKeysMsg[]): { u2: string[]; inboxes: Record<string, ShareInbox> } {
  const rosterIds = new Set(roster.sites.map((s) => s.siteId));
  const u2 = msgs.map((m) => m.siteId).filter((id) => rosterIds.has(id)).sort();
  if (new Set(u2).size !== u2.length) throw fail('FEDLORA_ERR_SECAGG', 'secagg: a site sent its shares twice');
  if (u2.length < roster.threshold) throw fail('FEDLORA_ERR_SECAGG', `secagg: only ${u2.length} of ${roster.sites.length} sites shared keys, threshold ${roster.threshold}`);
  const inboxes: Record<string, ShareInbox> = {};
  for (const id of u2) inboxes[id] = { round: roster.round, u2, shares: [] };
  for (const m of msgs) {
    const to = new Set(m.shares.map((s) => s.to));
    for (const peer of roster.sites) if (peer.siteId !== m.siteId && !to.has(peer.siteId)) throw fail('FEDLORA_ERR_SECAGG', `secagg: site ${m.siteId} sent no share for ${peer.siteId}`);
    for (const s of m.shares) {
      if (s.from !== m.siteId) throw fail('FEDLORA_ERR_SECAGG', `secagg: site ${m.siteId} sent a share labelled from ${s.from}`);
      if (inboxes[s.to]) inboxes[s.to].shares.push(s);
    }
  }
  return { u2, inboxes };
}

export interface MaskedAggregate { round: number; survivors: string[]; dropped: string[]; maskedSum: Uint32Array; request: UnmaskRequest }

/** Sum the masked inputs (mod 2^32); the sites in U2 that sent none are the dropped ones. */
export function aggregateMasked(roster: Roster, u2: string[], msgs: MaskedInputMsg[]): MaskedAggregate {
  const inU2 = new Set(u2);
  const sum = new Uint32Array(roster.dim);
  const seen = new Set<string>();
  for (const m of msgs) {
    if (!inU2.has(m.siteId)) throw fail('FEDLORA_ERR_SECAGG', `secagg: masked input from ${m.siteId}, which did not share keys`);
    if (seen.has(m.siteId)) throw fail('FEDLORA_ERR_SECAGG', `secagg: two masked inputs from ${m.siteId}`);
    seen.add(m.siteId);
    const b = Buffer.from(m.masked, 'base64');
    if (b.length !== 4 * roster.dim) throw fail('FEDLORA_ERR_SECAGG', `secagg: masked input from ${m.siteId} has ${b.length} bytes, expected ${4 * roster.dim}`);
    const y = new Uint32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));
    addInto(sum, y, 1);
  }
  const survivors = [...seen].sort();
  const dropped = u2.filter((u) => !seen.has(u));
  if (survivors.length < roster.threshold) throw fail('FEDLORA_ERR_SECAGG', `secagg: only ${survivors.length} of ${u2.length} sites submitted masked inputs (${dropped.length} dropped); threshold ${roster.threshold} — the round cannot be unmasked`);
  return { round: roster.round, survivors, dropped, maskedSum: sum, request: { round: roster.round, survivors, dropped } };
}

/** Reconstruct and remove the masks; returns the plain sum of the survivors' (clipped) inputs. */
export function unmask(roster: Roster, agg: MaskedAggregate, msgs: UnmaskSharesMsg[]): { sum: Float32Array; count: number } {
  const responders = msgs.filter((m) => agg.survivors.includes(m.siteId));
  if (responders.length < roster.threshold) throw fail('FEDLORA_ERR_SECAGG', `secagg: ${responders.length} sites answered the unmask request, threshold ${roster.threshold}; more than n - t sites dropped out`);
  const collect = (of: string, kind: 'selfShares' | 'keyShares') => responders.flatMap((m) => m[kind].filter((s) => s.of === of).map((s) => s.share));
  const y = Uint32Array.from(agg.maskedSum);
  for (const u of agg.survivors) {
    const shares = collect(u, 'selfShares');
    if (shares.length < roster.threshold) throw fail('FEDLORA_ERR_SECAGG', `secagg: ${shares.length} self-mask shares for ${u}, threshold ${roster.threshold}`);
    addInto(y, expandMask(selfMaskKey(combine(shares, roster.threshold, 32), roster.round), roster.dim), -1);
  }
  const byId = new Map(roster.sites.map((s) => [s.siteId, s]));
  for (const u of agg.dropped) {
    const shares = collect(u, 'keyShares');
    if (shares.length < roster.threshold) throw fail('FEDLORA_ERR_SECAGG', `secagg: ${shares.length} key shares for dropped site ${u}, threshold ${roster.threshold}`);
    const sk = privFromRaw(combine(shares, roster.threshold, 32), byId.get(u)!.sPk);
    if (createPublicKey(sk).export({ format: 'jwk' }).x !== byId.get(u)!.sPk) throw fail('FEDLORA_ERR_SECAGG', `secagg: reconstructed key of dropped site ${u} does not match its advertised key (bad shares)`);
    for (const v of agg.survivors) {
      // y_v contains (v < u ? + : -) PRG(s_vu); remove it
      const m = expandMask(pairMaskKey(dh(sk, byId.get(v)!.sPk), roster.round, u, v), roster.dim);
      addInto(y, m, v < u ? -1 : 1);
    }
  }
  return { sum: dequantizeSum(y, roster.clipRange, roster.sites.length, agg.survivors.length), count: agg.survivors.length };
}
