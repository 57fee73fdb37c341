// Cross-site evaluation, site side (tasks TASK_KIND_UPLOAD_LOCAL and TASK_KIND_CROSS_EVAL).
// Sharing the site's local-only adapter sends something derived from its records to the other
// sites, so UPLOAD_LOCAL is honoured only when the site's own policy.allow_cross_eval says so;
// the site then evaluates the consenting owners' adapters on its held-out set and reports
// only aggregate numbers (kind `cross`, model_owner = the adapter's owner site).
// The agent's runTask dispatches here:  UPLOAD_LOCAL -> handleUploadLocal, CROSS_EVAL -> handleCrossEval.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash, randomUUID } from 'node:crypto';
import type { SiteConfig } from '../config.ts';
import type { AuditLog } from '../../shared/audit.ts';
import { fail } from '../../shared/errors.ts';
import { TASK_DONE_PHASE } from '../../shared/proto.ts';
import { readPeftAdapter } from '../../shared/lora/peft.ts';
import { loraAtRank, rankOfLayout } from '../../shared/lora/rank.ts';
import { layoutOf } from '../../shared/tensors.ts';
import { encodeSafetensors } from '../../shared/safetensors.ts';
import { signUpdate } from '../../shared/update-signature.ts';
import type { AdapterWeights } from '../../shared/lora/types.ts';
import { loraOfTask, type AgentLogger } from './task-context.ts';
import type { FederationWire, WireTask } from './wire.ts';
import { reportedFigure, wireMetric } from './metrics-report.ts';
import type { SiteWorkspace } from './workspace.ts';
import { declineTask } from './decline.ts';

/** The payload_kind of a local-only adapter upload (coordinator/crosseval routes it). */
export const LOCAL_ADAPTER_PAYLOAD = 'local_adapter';

export interface PeerAdapterRef { jobId: string; version: number; sha256: string; sizeBytes: number | string; manifestSha256: string }
/** A task as the wire delivers it; peerAdapters/peerSites are set on CROSS_EVAL tasks. */
export type CrossEvalTask = WireTask & { peerAdapters?: PeerAdapterRef[]; peerSites?: string[] };

export interface CrossEvalContext {
  siteId: string;
  config: Pick<SiteConfig, 'policy'>;
  wire: Pick<FederationWire, 'declineTask' | 'submitUpdate' | 'fetchAdapter' | 'reportMetrics'>;
  ws: Pick<SiteWorkspace, 'loadLocalBaseline' | 'evaluate'>;
  audit: Pick<AuditLog, 'append'>;
  log: AgentLogger;
  /** The site's private key (PEM), read at each use: a renewed certificate brings a new key. */
  privateKeyPem: string;
  /** Scratch folder for fetched adapters (default: a fresh os.tmpdir() folder, removed after). */
  workDir?: string;
}

/** UPLOAD_LOCAL: decline unless policy.allow_cross_eval; else send the local-only adapter, signed. */
export async function handleUploadLocal(ctx: CrossEvalContext, task: CrossEvalTask): Promise<'declined' | 'uploaded'> {
  const subject = `${task.jobId}/${task.round}`;
  if (!ctx.config.policy.allow_cross_eval) {
    const reason = `site ${ctx.siteId} policy.allow_cross_eval is false: its local-only adapter is not shared`;
    ctx.log.warn({ task: task.taskId, job: task.jobId }, 'UPLOAD_LOCAL declined by site policy');
    await declineTask(ctx, task, 'FEDLORA_ERR_POLICY', reason);
    return 'declined';
  }
  const local = ctx.ws.loadLocalBaseline(task.jobId);
  if (!local) {
    const reason = `site ${ctx.siteId} has no local-only adapter for job ${task.jobId} (no local baseline was trained)`;
    await declineTask(ctx, task, 'FEDLORA_ERR_NOT_FOUND', reason);
    return 'declined';
  }
  const tensors = new Map([...local].map(([k, t]) => [k, { dtype: 'F32' as const, shape: t.shape, data: t.data }]));
  const bytes = encodeSafetensors(tensors, { format: 'pt' });
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  const updateId = `local-${ctx.siteId}-${randomUUID()}`.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 128);
  const signed = { updateId, jobId: task.jobId, round: task.round, baseVersion: task.round, sha256, numExamples: 1 };
  const signature = signUpdate(ctx.privateKeyPem, signed);
  const dir = mkdtempSync(join(ctx.workDir ?? tmpdir(), 'fedlora-xupload-'));
  try {
    const file = join(dir, 'adapter_model.safetensors');
    writeFileSync(file, bytes);
    const resp = await ctx.wire.submitUpdate({
      ...signed, taskId: task.taskId, totalBytes: bytes.length, chunkSize: 1024 * 1024, payloadKind: LOCAL_ADAPTER_PAYLOAD, signature,
      updateNorm: 0, clipped: false, metadataJson: Buffer.alloc(0),
    }, file);
    if (!resp.complete || resp.sha256 !== sha256) throw fail('FEDLORA_ERR_UPDATE_HASH', `local adapter upload ${updateId}: coordinator acknowledged ${resp.receivedBytes} bytes sha256 ${resp.sha256}, expected ${bytes.length} bytes ${sha256}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  ctx.audit.append(ctx.siteId, 'egress', subject, { what: 'local-only adapter for cross-evaluation', update_id: updateId, task_id: task.taskId, tensors: tensors.size, bytes: bytes.length, sha256 });
  return 'uploaded';
}

/** CROSS_EVAL: evaluate each owner's adapter (and the site's own local-only one, the diagonal)
 *  on the local held-out set (the diagonal only when this site is one of the owners); report
 *  kind `cross` metrics with model_owner = owner site. */
export async function handleCrossEval(ctx: CrossEvalContext, task: CrossEvalTask): Promise<{ owners: string[] }> {
  const peers = task.peerAdapters ?? [];
  const owners = task.peerSites ?? [];
  if (peers.length !== owners.length) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `task ${task.taskId}: ${peers.length} peer_adapters but ${owners.length} peer_sites`);
  const lora = loraOfTask(task);
  const done: string[] = [];
  const report = async (owner: string, weights: AdapterWeights, version: number) => {
    // a peer that trains a lower rank (lora.min_site_r) sent its adapter at that rank
    const m = await ctx.ws.evaluate(weights, loraAtRank(lora, rankOfLayout(layoutOf(weights), `adapter of ${owner}`) ?? lora.r));
    const metrics = m.filter((x) => Number.isFinite(x.value)).map((x) => wireMetric(reportedFigure('cross', x, version), version, owner));
    await ctx.wire.reportMetrics({ taskId: task.taskId, jobId: task.jobId, round: task.round, phase: 'cross_eval', metrics });
    done.push(owner);
  };
  const work = mkdtempSync(join(ctx.workDir ?? tmpdir(), 'fedlora-xeval-'));
  try {
    for (let i = 0; i < peers.length; i++) {
      const owner = owners[i], ref = peers[i];
      if (owner === ctx.siteId) continue; // the diagonal comes from the site's own copy below
      const dir = join(work, `${i}`);
      // The wire verifies the coordinator's manifest signature and the adapter's sha256.
      const got = await ctx.wire.fetchAdapter({ jobId: ref.jobId, version: ref.version, ownerSite: owner }, dir);
      const manifest = JSON.parse(got.manifestJson.toString('utf8')) as { adapter_sha256: string; owner_site?: string };
      if (ref.sha256 && manifest.adapter_sha256 !== ref.sha256) throw fail('FEDLORA_ERR_UPDATE_HASH', `adapter of site ${owner} (job ${ref.jobId} v${ref.version}): task names sha256 ${ref.sha256}, the signed manifest ${manifest.adapter_sha256}`);
      if (manifest.owner_site !== owner) throw fail('FEDLORA_ERR_SIGNATURE', `adapter of site ${owner}: the signed manifest names owner ${JSON.stringify(manifest.owner_site)}`);
      await report(owner, readPeftAdapter(dir).weights, ref.version);
    }
    // The diagonal only for an owner: a site that did not share its adapter has no column.
    const mine = owners.indexOf(ctx.siteId);
    const own = mine >= 0 ? ctx.ws.loadLocalBaseline(task.jobId) : null;
    if (own) await report(ctx.siteId, own, peers[mine].version);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  ctx.audit.append(ctx.siteId, 'egress', `${task.jobId}/${task.round}`, { what: 'cross-evaluation metrics (aggregates only)', task_id: task.taskId, owners: done });
  await reportTaskDone(ctx.wire, task);
  return { owners: done };
}

/** The empty report that tells the coordinator an EVALUATE / CROSS_EVAL task is finished (its
 *  side task is then done and not sent again; a report per owner or per kind came before). */
export async function reportTaskDone(wire: Pick<FederationWire, 'reportMetrics'>, task: Pick<WireTask, 'taskId' | 'jobId' | 'round'>): Promise<void> {
  await wire.reportMetrics({ taskId: task.taskId, jobId: task.jobId, round: task.round, phase: TASK_DONE_PHASE, metrics: [] });
}
