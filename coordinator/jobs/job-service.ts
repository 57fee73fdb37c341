// Jobs: submission (validated, stored, version 0 published), cancellation, and what the rest of
// the coordinator reads about a job — its spec, adapter layout, aggregation strategy and, for a
// Poisson-sampled DP job, its fixed eligible sites — cached per job id.
import { createHash, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { EventEmitter } from 'node:events';
import { fail } from '../../shared/errors.ts';
import { decodeSafetensorsF32 } from '../../shared/safetensors.ts';
import { flatten } from '../../shared/tensors.ts';
import type { CoordinatorStore, JobRow } from '../store/store.ts';
import { appendNow } from '../store/audit.ts';
import { jobLayout, type JobLayout } from '../publish/layout.ts';
import { initialAdapterFlat } from '../publish/init-adapter.ts';
import { adapterFiles, publishVersion, type Signer } from '../publish/publisher.ts';
import { lineageSourceFromStore } from '../publish/lineage.ts';
import type { InitAdapterRef } from '../../shared/publication-manifest.ts';
import type { AdapterLayout } from '../../shared/tensors.ts';
import { lineageIssues } from './lineage.ts';
import { createStrategy } from '../strategies/registry.ts';
import type { Candidate, Strategy } from '../strategies/types.ts';
import { parseJobSpec, type JobSpec } from './spec.ts';
import { checkJobId } from './job-id.ts';
import { populationFor, populationOf, recordPopulation } from './population.ts';
import { addPeriod, insertPeriod, periodsOf, siteRevisions, totalRounds } from './periods.ts';

export interface JobInfo {
  spec: JobSpec;
  layout: JobLayout;
  strategy: Strategy;
  /** The fixed eligible sites of a Poisson-sampled DP job (N = length); null otherwise. */
  population: string[] | null;
}

export interface JobServiceDeps {
  store: CoordinatorStore;
  dataDir: string;
  signer: Signer;
  now: () => number;
  events: EventEmitter;
  /** Advance the rounds (after a submission). */
  kick: () => void;
}

/** The job's strategy: its aggregation section, wrapped in DP-FedAvg when privacy.dp is set;
 *  it selects at most max_sites online sites, or with sample_rate < 1 Poisson-samples N sites. */
export function createJobStrategy(spec: JobSpec, population: number | undefined): Strategy {
  return createStrategy(spec.aggregation, { dp: spec.privacy.dp, expectedSites: spec.max_sites, maxSites: spec.max_sites, population, source: 'aggregation' });
}

export class JobService {
  private readonly cache = new Map<string, JobInfo>();

  constructor(private readonly d: JobServiceDeps) {}

  info(jobId: string): JobInfo {
    let c = this.cache.get(jobId);
    if (!c) {
      const row = this.d.store.job(jobId);
      if (!row) throw fail('FEDLORA_ERR_NOT_FOUND', `job ${jobId} does not exist`);
      const spec = parseJobSpec(JSON.parse(row.spec_json), `job ${jobId}`);
      const population = populationOf(this.d.store.db, jobId);
      c = { spec, layout: jobLayout(spec), strategy: createJobStrategy(spec, population?.length), population };
      this.cache.set(jobId, c);
    }
    return c;
  }

  /** Register a job and publish its version 0 (A from init_seed, B = 0; or the published version
   *  its init_adapter names). `actor` goes in the audit log. */
  async submit(spec: JobSpec, jobId = `job-${randomUUID().slice(0, 8)}`, actor = 'admin'): Promise<string> {
    const { store, now: clock } = this.d;
    checkJobId(jobId, 'submitJob'); // it names folders (manifests/<job>/)
    const layout = jobLayout(spec); // refuses a bad base model config before anything is stored
    const init = spec.init_adapter ? this.initAdapter(spec, layout.full) : null;
    const population = populationFor(spec, store.activeSites());
    createJobStrategy(spec, population?.length); // refuses an unknown strategy or DP combination at submission
    const now = clock();
    store.tx(() => {
      if (store.job(jobId)) throw fail('FEDLORA_ERR_JOB_STATE', `job ${jobId} already exists`);
      const specJson = JSON.stringify(spec);
      store.insertJob({ id: jobId, name: spec.name, specJson, now });
      if (population) recordPopulation(store.db, jobId, population);
      insertPeriod(store.db, jobId, { period: 0, firstRound: 1, rounds: spec.rounds, reason: 'submitted', actor, siteRevisions: siteRevisions(store.db), createdMs: now });
      store.audit.append(actor, 'job_submitted', jobId, {
        name: spec.name, spec_sha256: createHash('sha256').update(specJson).digest('hex'), rounds: spec.rounds, aggregation: spec.aggregation.name,
        dp: !!spec.privacy.dp, secure_aggregation: spec.privacy.secure_aggregation, ...(population ? { dp_eligible_sites: population } : {}),
        ...(init ? { init_adapter: init.ref } : {}),
      }, new Date(now));
    });
    const v0 = publishVersion(store, this.d.dataDir, this.d.signer, {
      jobId, spec, version: 0, round: 0, flat: init?.flat ?? initialAdapterFlat(layout.model, spec, layout.full), layout: layout.full,
      contributingSites: 0, numExamples: 0, createdMs: now, ...(init ? { initAdapter: init.ref } : {}),
    });
    appendNow(store.db, 'coordinator', 'publish', `${jobId}/v0`, { job: jobId, version: 0, round: 0, sha256: v0.sha256, size: v0.size, manifest_sha256: v0.manifest_sha256 }, new Date(now));
    this.d.events.emit('job', jobId);
    this.d.kick();
    return jobId;
  }

  /** The published version spec.init_adapter names, checked against the spec (errors name the field). */
  private initAdapter(spec: JobSpec, full: AdapterLayout): { ref: InitAdapterRef; flat: Float32Array } {
    const found = lineageSourceFromStore(this.d.store, spec.init_adapter!);
    const issues = 'issue' in found ? [found.issue] : lineageIssues(spec, found.source, full);
    if (issues.length) throw fail('FEDLORA_ERR_JOB_INVALID', `job spec: ${issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
    const { row } = found as Exclude<typeof found, { issue: unknown }>;
    const file = adapterFiles(row).model;
    return { ref: { job_id: row.job_id, version: row.version, manifest_sha256: row.manifest_sha256 }, flat: flatten(decodeSafetensorsF32(readFileSync(file), file).tensors, full) };
  }

  /** A new data period of `rounds` rounds (fedlora job continue); a completed job runs again. */
  continue(jobId: string, rounds: number, actor = 'admin'): void {
    const { spec } = this.info(jobId);
    this.d.store.tx(() => addPeriod(this.d.store, jobId, spec, rounds, 'continued', actor, this.d.now()));
    this.d.events.emit('job', jobId);
    this.d.kick();
  }

  /** Rounds of all the job's data periods. */
  roundsTotal(jobId: string): number {
    const job = this.d.store.job(jobId);
    return totalRounds(periodsOf(this.d.store.db, jobId, this.info(jobId).spec, job?.created_ms));
  }

  cancel(jobId: string, actor = 'admin'): void {
    const { store } = this.d;
    const j = store.job(jobId);
    if (!j) throw fail('FEDLORA_ERR_NOT_FOUND', `job ${jobId} does not exist`);
    if (j.status !== 'running') throw fail('FEDLORA_ERR_JOB_STATE', `job ${jobId} is ${j.status}`);
    store.tx(() => {
      store.setJobStatus(jobId, 'cancelled', this.d.now());
      store.audit.append(actor, 'job_cancelled', jobId, { version: j.current_version }, new Date(this.d.now()));
    });
    this.d.events.emit('job', jobId);
  }

  /** The sites a round of the job may select: the fixed roster of a Poisson-sampled job (still
   *  active ones, online or not), else the sites online since `onlineSince`. */
  candidates(jobId: string, onlineSince: number): Candidate[] {
    const online = new Set(this.d.store.onlineSites(onlineSince));
    const { population } = this.info(jobId);
    if (!population) return [...online].map((siteId) => ({ siteId, online: true }));
    const active = new Set(this.d.store.activeSites());
    return population.filter((s) => active.has(s)).map((siteId) => ({ siteId, online: online.has(siteId) }));
  }

  /** A published version as a flat vector in the job's full layout. */
  loadVersion(jobId: string, version: number): Float32Array {
    const row = this.d.store.adapterVersion(jobId, version);
    if (!row) throw fail('FEDLORA_ERR_NOT_FOUND', `job ${jobId} has no adapter version ${version}`);
    const file = adapterFiles(row).model;
    return flatten(decodeSafetensorsF32(readFileSync(file), file).tensors, this.info(jobId).layout.full);
  }

  /** Resolve when the job leaves 'running' (or reject after timeoutMs). */
  waitFor(jobId: string, timeoutMs = 600_000): Promise<JobRow> {
    const { store, events } = this.d;
    return new Promise((resolve, reject) => {
      const check = (id?: string) => {
        if (id !== undefined && id !== jobId) return;
        const j = store.job(jobId);
        if (j && j.status !== 'running') {
          cleanup();
          resolve(j);
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(fail('FEDLORA_ERR_UNAVAILABLE', `job ${jobId} still running after ${timeoutMs} ms`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        events.off('job', check);
      };
      events.on('job', check);
      check();
    });
  }
}
