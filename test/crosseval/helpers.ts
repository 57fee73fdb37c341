// A finished 3-site job on a real coordinator (secure aggregation over mutual TLS), and site
// task loops that answer UPLOAD_LOCAL / CROSS_EVAL with the real site-side handlers and a stub
// workspace: owner k's local-only adapter has every value (k+1)/10, and evaluating adapter w
// at data site k gives accuracy w[0] + k/100, so a matrix cell shows whose adapter came back.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { runSecAggSite } from '../../site-agent/agent/secagg-client.ts';
import { handleCrossEval, handleUploadLocal, type CrossEvalContext, type CrossEvalTask } from '../../site-agent/agent/cross-eval.ts';
import { createFederationClient, type Task } from '../../shared/proto.ts';
import { createSiteChannelCredentials } from '../../shared/tls.ts';
import type { AdapterWeights } from '../../shared/lora/types.ts';
import { randomDelta, secAggSpec, startFederation, waitOpen, type Federation } from '../secagg-e2e/helpers.ts';
import { SLOWDOWN } from '../runner/limits.ts';

export const IDS = ['site-a', 'site-b', 'site-c'];
const PREFIX = 'base_model.model.model.layers.0.self_attn.q_proj';
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function localAdapter(k: number): AdapterWeights {
  const v = (k + 1) / 10;
  return new Map([
    [`${PREFIX}.lora_A.weight`, { shape: [8, 64], data: new Float32Array(8 * 64).fill(v) }],
    [`${PREFIX}.lora_B.weight`, { shape: [64, 8], data: new Float32Array(64 * 8).fill(v) }],
  ]);
}

export async function finishedJob(jobId: string): Promise<Federation> {
  const fed = await startFederation(IDS);
  await fed.coord.engine.submitJob(secAggSpec({ min_sites: 3, max_sites: 3 }), jobId);
  await waitOpen(() => fed.coord, jobId, 1);
  const { layout } = fed.coord.engine.jobInfo(jobId);
  await Promise.all(fed.sites.map((s, k) => runSecAggSite(s.wire, {
    jobId, round: 1, siteId: s.id, update: randomDelta(layout.update.total, 5 + k, 0.05), numExamples: 10, pollMs: 50, deadlineUnixMs: Date.now() + 30_000 * SLOWDOWN,
  })));
  const job = await fed.coord.engine.waitForJob(jobId, 20_000 * SLOWDOWN);
  if (job.status !== 'completed') throw new Error(`job ${jobId} is ${job.status}`);
  return fed;
}

export type AuditSeen = Array<{ action: string; details: Record<string, unknown> }>;

export interface SiteLoops {
  audits: Map<string, AuditSeen>;
  errors: unknown[];
  tasks: Array<{ site: string; kind: string; peerSites: string[] }>;
  handled: Promise<unknown>[];
  close(): void;
}

/** Each site's raw task stream (to see peer_adapters/peer_sites) dispatching to the handlers;
 *  a task for which `hold` says true is received but left unanswered (a site busy or stuck). */
export async function siteLoops(fed: Federation, consents: (siteId: string) => boolean, hold: (siteId: string, kind: string) => boolean = () => false): Promise<SiteLoops> {
  const out: SiteLoops = { audits: new Map(), errors: [], tasks: [], handled: [], close: () => undefined };
  const streams = fed.sites.map((s, k) => {
    const entries: AuditSeen = [];
    out.audits.set(s.id, entries);
    const ctx: CrossEvalContext = {
      siteId: s.id,
      config: { policy: { allow_cross_eval: consents(s.id) } } as CrossEvalContext['config'],
      wire: s.grpc,
      ws: {
        loadLocalBaseline: () => localAdapter(k),
        evaluate: async (w) => {
          const first = [...(w ?? new Map()).values()][0];
          return [{ name: 'accuracy', subset: '', value: (first?.data[0] ?? 0) + k / 100, count: 20 }];
        },
      },
      audit: { append: (_a: string, action: string, _s: string, details: Record<string, unknown> = {}) => (entries.push({ action, details }), {}) } as unknown as CrossEvalContext['audit'],
      log: { info() {}, warn() {}, error() {} },
      privateKeyPem: readFileSync(join(s.dir, 'site.key'), 'utf8'),
    };
    const client = createFederationClient(fed.coord.federationEndpoint, createSiteChannelCredentials(s.dir));
    const stream = client.streamTasks({ agentVersion: 'test', maxParallelTasks: 1 });
    stream.on('data', (t: Task) => {
      const task = t as unknown as CrossEvalTask;
      out.tasks.push({ site: s.id, kind: t.kind, peerSites: [...(t.peerSites ?? [])] });
      if (hold(s.id, t.kind)) return;
      if (t.kind === 'TASK_KIND_UPLOAD_LOCAL') out.handled.push(handleUploadLocal(ctx, task).catch((e) => out.errors.push(e)));
      if (t.kind === 'TASK_KIND_CROSS_EVAL') out.handled.push(handleCrossEval(ctx, task).catch((e) => out.errors.push(e)));
    });
    stream.on('error', () => undefined);
    return { client, stream };
  });
  out.close = () => {
    for (const { client, stream } of streams) {
      stream.cancel();
      client.close();
    }
  };
  await sleep(400); // the streams are attached at the hub
  return out;
}

export function adminHeaders(fed: Federation): Record<string, string> {
  const token = readFileSync(join(fed.dataDir, 'admin.token'), 'utf8').trim();
  return { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
}
