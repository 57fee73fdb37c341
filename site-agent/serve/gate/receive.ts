// What the site agent does with each verified global adapter it has evaluated: record it as a
// candidate with the held-out metrics the agent computed, run the safety suite on it (as the
// assistant would serve it), sample its doctors' review cases if the site asks for it
// (serve.review.auto_sample), and let the gate decide. Version 0 is only recorded: its LoRA B is
// zero, so its metrics are the base model's, the reference while the base model is served.
import type Database from 'better-sqlite3-multiple-ciphers';
import type { AuditLog } from '../../../shared/audit.ts';
import type { SiteConfig } from '../../config.ts';
import { isFedloraError } from '../../../shared/errors.ts';
import { latestSafetyRun, runSafetySuite, storeSafetyRun } from '../../eval/safety/suite.ts';
import { createEngineBackend } from '../backend/engine-backend.ts';
import type { GenerationBackend } from '../backend/types.ts';
import { sampleReviewCases, siteSampleDeps } from '../review/sample.ts';
import { decideCandidate, getCandidate, recordCandidate, type MetricValue } from './policy.ts';
import { versionLabel } from './serving.ts';

export interface ReceivedGlobal {
  jobId: string;
  version: number;
  sha256: string;
  dir: string;
  metrics: MetricValue[];
}

export interface ReceiveContext {
  siteDir: string;
  db: Database.Database;
  audit: AuditLog;
  config: SiteConfig;
  log: { info(o: Record<string, unknown>, m: string): void; warn(o: Record<string, unknown>, m: string): void };
  signal?: AbortSignal;
}

export async function receiveGlobalAdapter(ctx: ReceiveContext, g: ReceivedGlobal): Promise<void> {
  recordCandidate(ctx.db, g);
  if (g.version === 0) return;
  const prior = getCandidate(ctx.db, g.jobId, g.version);
  if (prior && (prior.status === 'approved' || prior.status === 'rejected')) return;
  const policy = ctx.config.serve.gate;
  const label = versionLabel(g.jobId, g.version);
  const adapter = { label, jobId: g.jobId, version: g.version, sha256: g.sha256, dir: g.dir, seq: 0 };
  // One engine for the safety suite and the review sample, loaded only when one of them runs (its
  // inference sessions are the process's cached ones, as before: not released here).
  let engine: Promise<GenerationBackend> | null = null;
  const backend = () => (engine ??= createEngineBackend({ modelDir: ctx.config.model.path, device: ctx.config.model.device }));
  if (policy.safety_on_receive && !latestSafetyRun(ctx.db, g.sha256)) {
    const b = await backend();
    await b.useVersion(adapter);
    const t0 = performance.now();
    const report = await runSafetySuite({ backend: b, config: ctx.config.serve, adapter: { label, sha256: g.sha256 }, maxNewTokens: policy.safety_max_new_tokens, signal: ctx.signal });
    storeSafetyRun(ctx.db, report, { jobId: g.jobId, version: g.version });
    ctx.log.info({ adapter: label, pass_rate: report.pass_rate, ci95: report.ci95, seconds: Math.round((performance.now() - t0) / 1000) }, 'safety suite run on the received global adapter');
  }
  const review = ctx.config.serve.review;
  if (review.enabled && review.auto_sample > 0) {
    const t0 = performance.now();
    // The same sample `fedlora site review sample --size N` makes (it adds only what is missing).
    // A site without held-out records still gets its gate decision (the review check says why).
    try {
      const r = await sampleReviewCases(siteSampleDeps(ctx.siteDir, ctx.config, ctx.db, await backend()), {
        adapter, size: review.auto_sample, doubleFraction: review.double_review_fraction, maxNewTokens: review.max_new_tokens, signal: ctx.signal,
      });
      ctx.log.info({ adapter: label, added: r.added, cases: r.cases, too_long: r.tooLong, seconds: Math.round((performance.now() - t0) / 1000) }, "doctors' review cases sampled for the received global adapter");
    } catch (e) {
      if (!isFedloraError(e) || e.code !== 'FEDLORA_ERR_DATASET') throw e;
      ctx.log.warn({ adapter: label, err: e.message }, "doctors' review cases not sampled");
    }
  }
  const c = decideCandidate(ctx.db, ctx.audit, policy, g.jobId, g.version);
  ctx.log.info({ adapter: label, status: c.status, failing: (c.checks ?? []).filter((x) => !x.ok).map((x) => x.name) }, 'release gate decision');
}
