// The coordinator's side of the Federation SecAgg RPC: one call per stage message of a site
// (config, advertise, share, masked chunks, unmask, status). A message is checked against the
// caller, the round attempt and the stage, committed, and only then acknowledged; the stage
// machine (stages.ts) closes stages as they fill up.
import { createPublicKey } from 'node:crypto';
import { fail } from '../../shared/errors.ts';
import type { AdvertiseMsg, Roster, ShareKeysMsg, UnmaskSharesMsg } from '../../shared/secagg/protocol.ts';
import {
  SECAGG_STAGES,
  type AdvertisePayload, type MaskedChunkPayload, type SecAggRoundConfig, type SharePayload, type StatusReply, type UnmaskPayload,
} from '../../shared/secagg/messages.ts';
import type { RoundRow } from '../store/store.ts';
import type { SecAggRoundRow } from './store.ts';
import { ids, keyOf, parse, type SecAggDeps, type SecAggStages } from './stages.ts';
import { sha256Hex } from '../../shared/hash.ts';

/** One SecAgg call as the transport hands it over (the caller's site id from its certificate). */
export interface SecAggStageInput {
  siteId: string;
  jobId: string;
  round: number;
  stage: string; // config | advertise | share | masked | unmask | status (shared/secagg/messages.ts)
  payload: Buffer;
}
export interface SecAggStageOutput {
  payload: Buffer;
  ready: boolean;
}

const isX25519PublicKey = (x: string): boolean => {
  try {
    createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x }, format: 'jwk' });
    return x.length <= 64;
  } catch {
    return false;
  }
};

export class SecAggRpc {
  constructor(private readonly d: SecAggDeps, private readonly stages: SecAggStages) {}

  private get store() {
    return this.stages.store;
  }

  async handle(m: SecAggStageInput): Promise<SecAggStageOutput> {
    if (!(SECAGG_STAGES as readonly string[]).includes(m.stage)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `SecAggMessage.stage: "${m.stage}" is not one of ${SECAGG_STAGES.join('|')}`);
    const { spec } = this.d.jobInfo(m.jobId);
    if (!spec.privacy.secure_aggregation) throw fail('FEDLORA_ERR_SECAGG', `job ${m.jobId} does not use secure aggregation (privacy.secure_aggregation is false)`);
    const attempts = this.d.store.rounds(m.jobId).filter((x) => x.round === m.round);
    if (!attempts.length) throw fail('FEDLORA_ERR_NOT_FOUND', `SecAggMessage.round: job ${m.jobId} has no round ${m.round}`);
    let body: Record<string, unknown>;
    try {
      body = m.payload.length ? (JSON.parse(m.payload.toString('utf8')) as Record<string, unknown>) : {};
      if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new Error('not a JSON object');
    } catch (e) {
      throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `SecAggMessage.payload (stage ${m.stage}): ${(e as Error).message}`);
    }
    const wanted = typeof body.attempt === 'number' ? body.attempt : attempts[attempts.length - 1].attempt;
    const r = attempts.find((x) => x.attempt === wanted);
    if (!r) throw fail('FEDLORA_ERR_NOT_FOUND', `SecAggMessage: job ${m.jobId} round ${m.round} has no attempt ${wanted}`);
    const task = this.d.store.roundTasks(r.job_id, r.round, r.attempt).find((t) => t.site_id === m.siteId);
    if (!task) throw fail('FEDLORA_ERR_NOT_SELECTED', `site ${m.siteId} is not selected for job ${m.jobId} round ${m.round} attempt ${r.attempt}`);
    const latest = attempts[attempts.length - 1];
    if (r.attempt !== latest.attempt && m.stage !== 'status') throw fail('FEDLORA_ERR_ROUND_CLOSED', `job ${m.jobId} round ${m.round}: attempt ${r.attempt} is over, attempt ${latest.attempt} runs now`);

    if (r.state === 'open') {
      this.stages.ensure(r);
      this.stages.progress(r); // deadlines first: a message after a stage's deadline is late
    }
    const sa = this.store.round(keyOf(r));
    if (!sa) throw fail('FEDLORA_ERR_ROUND_CLOSED', `job ${m.jobId} round ${m.round} attempt ${r.attempt} is ${r.state} and never ran secure aggregation`);
    if (m.stage === 'status') return this.reply(this.status(sa), sa.stage === 'done' || sa.stage === 'failed');
    if (sa.stage === 'failed') throw fail('FEDLORA_ERR_SECAGG', `job ${m.jobId} round ${m.round} attempt ${r.attempt}: secure aggregation failed: ${sa.error ?? ''}`);
    if (m.stage === 'config') {
      if (sa.stage !== 'advertise' || r.state !== 'open') throw fail('FEDLORA_ERR_ROUND_CLOSED', `job ${m.jobId} round ${m.round}: the key-advertising stage is closed (stage ${sa.stage})`);
      if (task.status === 'declined' || task.status === 'cancelled') throw fail('FEDLORA_ERR_ROUND_CLOSED', `task ${task.task_id} is ${task.status}`);
      return this.reply(JSON.parse(sa.config_json), true);
    }
    if (body.attempt !== sa.attempt) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `SecAggMessage.payload.attempt: expected ${sa.attempt} (from the config stage), got ${String(body.attempt)}`);
    const handlers = { advertise: () => this.onAdvertise(r, m.siteId, body as unknown as AdvertisePayload),
      share: () => this.onShare(r, m.siteId, body as unknown as SharePayload),
      masked: () => this.onMasked(r, m.siteId, body as unknown as MaskedChunkPayload),
      unmask: () => this.onUnmask(r, m.siteId, body as unknown as UnmaskPayload) } as const;
    return handlers[m.stage as keyof typeof handlers]();
  }

  private reply(o: unknown, ready: boolean): SecAggStageOutput {
    return { payload: Buffer.from(JSON.stringify(o), 'utf8'), ready };
  }
  private current(r: RoundRow): { sa: SecAggRoundRow; cfg: SecAggRoundConfig } {
    const sa = this.store.round(keyOf(r))!;
    if (sa.stage === 'failed') throw fail('FEDLORA_ERR_SECAGG', `job ${r.job_id} round ${r.round} attempt ${r.attempt}: secure aggregation failed: ${sa.error ?? ''}`);
    return { sa, cfg: JSON.parse(sa.config_json) as SecAggRoundConfig };
  }
  private status(sa: SecAggRoundRow): StatusReply {
    return {
      attempt: sa.attempt, stage: sa.stage, roster: parse<Roster | null>(sa.roster_json, null)?.sites.map((s) => s.siteId) ?? [],
      u2: ids(sa.u2_json), survivors: ids(sa.survivors_json), dropped: ids(sa.dropped_json), error: sa.error,
    };
  }

  private onAdvertise(r: RoundRow, siteId: string, p: AdvertisePayload): SecAggStageOutput {
    const msg = p.msg as AdvertiseMsg | undefined;
    if (!msg || msg.siteId !== siteId || typeof msg.cPk !== 'string' || typeof msg.sPk !== 'string') {
      throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `SecAgg advertise: payload.msg must be {siteId: "${siteId}", cPk, sPk}`);
    }
    // Checked here, not only when the stage closes: one site's bad keys there would fail the
    // whole round for every site (collectAdvertise).
    if (!isX25519PublicKey(msg.cPk) || !isX25519PublicKey(msg.sPk) || msg.cPk === msg.sPk) {
      throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `SecAgg advertise: payload.msg.cPk and payload.msg.sPk must be two different base64url X25519 public keys`);
    }
    const k = keyOf(r);
    let { sa } = this.current(r);
    if (sa.stage === 'advertise') {
      // A site that restarted before the roster closed may advertise fresh keys (replaces its row);
      // a poll re-sending the same keys writes nothing.
      const row = JSON.stringify({ attempt: p.attempt, msg: { siteId, cPk: msg.cPk, sPk: msg.sPk } });
      if (this.store.message(k, siteId, 'advertise') !== row) this.store.putMessage(k, siteId, 'advertise', row, this.d.now());
      this.stages.progress(r);
      sa = this.current(r).sa;
    }
    if (sa.stage === 'advertise') return this.reply({}, false);
    const roster = parse<Roster>(sa.roster_json, null as never);
    const me = roster.sites.find((s) => s.siteId === siteId);
    if (!me) throw fail('FEDLORA_ERR_SECAGG', `site ${siteId} is not in the round's roster: its keys arrived after the key-advertising stage closed`);
    if (me.cPk !== msg.cPk || me.sPk !== msg.sPk) throw fail('FEDLORA_ERR_SECAGG', `site ${siteId} advertised other keys than the roster holds (did the site restart mid-round?)`);
    return this.reply({ roster }, true);
  }

  private onShare(r: RoundRow, siteId: string, p: SharePayload): SecAggStageOutput {
    const msg = p.msg as ShareKeysMsg | undefined;
    if (!msg || msg.siteId !== siteId || !Array.isArray(msg.shares)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `SecAgg share: payload.msg must be {siteId: "${siteId}", shares: [...]}`);
    const k = keyOf(r);
    let { sa } = this.current(r);
    if (sa.stage === 'advertise') throw fail('FEDLORA_ERR_SECAGG', `SecAgg share from ${siteId} before the roster is out (stage advertise)`);
    if (sa.stage === 'share') {
      const roster = parse<Roster>(sa.roster_json, null as never);
      if (!roster.sites.some((s) => s.siteId === siteId)) throw fail('FEDLORA_ERR_SECAGG', `site ${siteId} is not in the round's roster`);
      // Exactly one share for every other roster site, checked now: an incomplete list stored
      // here would fail the whole round when the stage closes (routeShares).
      const peers = new Set(roster.sites.map((s) => s.siteId).filter((id) => id !== siteId));
      const seen = new Set<string>();
      msg.shares.forEach((s: unknown, i: number) => {
        const x = (s && typeof s === 'object' ? s : {}) as Partial<Record<'from' | 'to' | 'ct', unknown>>;
        if (x.from !== siteId || typeof x.to !== 'string' || !peers.has(x.to) || seen.has(x.to) || typeof x.ct !== 'string' || x.ct.length === 0) {
          throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `SecAgg share from ${siteId}: payload.msg.shares[${i}] (from ${String(JSON.stringify(x.from)).slice(0, 80)} to ${String(JSON.stringify(x.to)).slice(0, 80)}) does not fit the roster (one share with a ciphertext for each other site)`);
        }
        seen.add(x.to);
      });
      const missing = [...peers].filter((id) => !seen.has(id));
      if (missing.length) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `SecAgg share from ${siteId}: payload.msg.shares has no share for ${missing.join(', ')}`);
      const row = JSON.stringify({ attempt: p.attempt, msg: { siteId, shares: msg.shares.map((x) => ({ from: x.from, to: x.to, ct: x.ct })) } });
      if (this.store.message(k, siteId, 'share') !== row) this.store.putMessage(k, siteId, 'share', row, this.d.now());
      this.stages.progress(r);
      sa = this.current(r).sa;
    }
    if (sa.stage === 'share') return this.reply({}, false);
    const u2 = ids(sa.u2_json);
    if (!u2.includes(siteId)) throw fail('FEDLORA_ERR_SECAGG', `site ${siteId} did not share its keys before the share stage closed`);
    const shares = this.store.messages(k, 'share').flatMap((x) => (JSON.parse(x.payload) as SharePayload).msg.shares).filter((s) => s.to === siteId && u2.includes(s.from));
    if (!shares.length && sa.stage === 'done') throw fail('FEDLORA_ERR_ROUND_CLOSED', `job ${r.job_id} round ${r.round}: secure aggregation is finished`);
    return this.reply({ inbox: { round: r.round, u2, shares } }, true);
  }

  private onMasked(r: RoundRow, siteId: string, p: MaskedChunkPayload): SecAggStageOutput {
    const k = keyOf(r);
    const { sa, cfg } = this.current(r);
    if (p.siteId !== siteId) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `SecAgg masked: payload.siteId "${p.siteId}" is not the caller ${siteId}`);
    if (!(Number.isInteger(p.index) && p.index >= 0 && p.index < cfg.chunks)) throw fail('FEDLORA_ERR_CHUNK_ORDER', `SecAgg masked: chunk index ${p.index} outside 0..${cfg.chunks - 1}`);
    const data = Buffer.from(String(p.data ?? ''), 'base64');
    const want = 4 * (Math.min(cfg.dim, (p.index + 1) * cfg.chunkElems) - p.index * cfg.chunkElems);
    if (data.length !== want) throw fail('FEDLORA_ERR_CHUNK_SIZE', `SecAgg masked: chunk ${p.index} from ${siteId} has ${data.length} bytes, expected ${want}`);
    if (sha256Hex(data) !== p.sha256) throw fail('FEDLORA_ERR_CHUNK_HASH', `SecAgg masked: chunk ${p.index} from ${siteId}: sha256 mismatch`);
    const prior = this.store.chunk(k, siteId, p.index);
    if (prior && !prior.equals(data)) throw fail('FEDLORA_ERR_SECAGG', `SecAgg masked: site ${siteId} sent a different chunk ${p.index} than the one acknowledged`);
    if (!prior) {
      if (sa.stage !== 'masked') {
        throw fail('FEDLORA_ERR_ROUND_CLOSED', sa.stage === 'share' || sa.stage === 'advertise'
          ? `SecAgg masked: stage is ${sa.stage}; send masked input after the share inbox is out`
          : `SecAgg masked: the masked-input stage closed; site ${siteId} counts as dropped`);
      }
      if (!ids(sa.u2_json).includes(siteId)) throw fail('FEDLORA_ERR_SECAGG', `site ${siteId} did not share keys in time; it cannot send a masked input`);
      const now = this.d.now();
      this.store.tx(() => {
        this.store.putChunk(k, siteId, p.index, data, now);
        if ((this.store.chunkCounts(k).get(siteId) ?? 0) === cfg.chunks) {
          const t = this.d.store.roundTasks(r.job_id, r.round, r.attempt).find((x) => x.site_id === siteId);
          if (t && (t.status === 'pending' || t.status === 'delivered')) this.d.store.setTaskStatus(t.task_id, 'submitted');
        }
      });
      this.stages.progress(r);
    }
    const received = this.store.chunkCounts(k).get(siteId) ?? 0;
    return this.reply({ received, chunks: cfg.chunks, complete: received === cfg.chunks }, true);
  }

  private onUnmask(r: RoundRow, siteId: string, p: UnmaskPayload): SecAggStageOutput {
    const k = keyOf(r);
    const { sa } = this.current(r);
    if (sa.stage === 'advertise' || sa.stage === 'share' || sa.stage === 'masked') {
      if (p.msg) throw fail('FEDLORA_ERR_SECAGG', `SecAgg unmask: shares from ${siteId} before the survivor list is out (stage ${sa.stage})`);
      return this.reply({}, false);
    }
    const survivors = ids(sa.survivors_json);
    if (!survivors.includes(siteId)) throw fail('FEDLORA_ERR_SECAGG', `site ${siteId} is not a survivor of the masked stage (its masked input was missing when the stage closed)`);
    const request = { round: r.round, survivors, dropped: ids(sa.dropped_json) };
    if (!p.msg) return this.reply({ request }, true);
    const msg = p.msg as UnmaskSharesMsg;
    if (msg.siteId !== siteId || !Array.isArray(msg.selfShares) || !Array.isArray(msg.keyShares)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `SecAgg unmask: payload.msg must be {siteId: "${siteId}", selfShares, keyShares}`);
    const surv = new Set(survivors), drop = new Set(request.dropped);
    if (msg.selfShares.some((s) => !surv.has(s.of)) || msg.keyShares.some((s) => !drop.has(s.of))) {
      throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `SecAgg unmask from ${siteId}: self shares must be of survivors and key shares of dropped sites`);
    }
    if (sa.stage !== 'unmask') return this.reply({ accepted: false, note: `already unmasked (stage ${sa.stage})` }, true);
    this.store.putMessage(k, siteId, 'unmask', JSON.stringify({ attempt: p.attempt, msg }), this.d.now());
    this.stages.progress(r);
    return this.reply({ accepted: true }, true);
  }
}
