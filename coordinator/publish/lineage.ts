// Lineage of published versions across jobs. A job started from an earlier job's version
// (spec init_adapter) publishes as its version 0 exactly that adapter, and its v0 manifest names
// it (init_adapter) and chains to it (prev_manifest_sha256 = that version's manifest hash). So:
//   lineageChain  the signed manifests from the root job's v0 to a version of a later job, one
//                 chain that shared/publication-manifest.ts verifyManifestChain checks whole;
//   versionTree   every published version with its parent (the previous version, or for a v0
//                 the version it continues), the dashboard's version tree.
import { fail } from '../../shared/errors.ts';
import type { InitAdapterRef, PublicationManifest } from '../../shared/publication-manifest.ts';
import type { AdapterVersionRow, CoordinatorStore } from '../store/store.ts';
import { jobLayout } from './layout.ts';
import { parseJobSpec, type JobSpec } from '../jobs/spec.ts';
import type { LineageSource, SpecIssue } from '../jobs/lineage.ts';

const manifestOf = (row: AdapterVersionRow) => JSON.parse(row.manifest_json) as PublicationManifest;

/** What lineage reads of the coordinator's store (a read-only view is enough: `fedlora job validate`). */
export type LineageReader = Pick<CoordinatorStore, 'job' | 'adapterVersion' | 'adapterVersions'>;

/** The published version a spec's init_adapter names, as a LineageSource (or the issue naming the field). */
export function lineageSourceFromStore(store: LineageReader, ref: { job: string; version: number }): { source: LineageSource; row: AdapterVersionRow } | { issue: SpecIssue } {
  const job = store.job(ref.job);
  if (!job) return { issue: { path: ['init_adapter', 'job'], message: `job ${ref.job} does not exist on this coordinator` } };
  const row = store.adapterVersion(ref.job, ref.version);
  if (!row) {
    const last = store.adapterVersions(ref.job).at(-1);
    return { issue: { path: ['init_adapter', 'version'], message: `job ${ref.job} has no published version ${ref.version}${last ? ` (published: v0..v${last.version})` : ''}` } };
  }
  const spec: JobSpec = parseJobSpec(JSON.parse(job.spec_json), `job ${ref.job}`);
  const shapes = new Map(jobLayout(spec).full.entries.map((e) => [e.name, e.shape]));
  return {
    row,
    source: {
      job: ref.job, version: ref.version, manifest: manifestOf(row), manifestSha256: row.manifest_sha256, shapes,
      lora: { r: spec.lora.r, alpha: spec.lora.alpha, target_modules: spec.lora.target_modules, use_rslora: spec.lora.use_rslora },
    },
  };
}

/** Rows from the root job's v0 up to `version` of `jobId`, following init_adapter back. */
export function lineageChain(store: CoordinatorStore, jobId: string, version?: number): AdapterVersionRow[] {
  const out: AdapterVersionRow[][] = [];
  const seen = new Set<string>();
  let at: { job: string; version: number | undefined } | null = { job: jobId, version };
  while (at) {
    if (seen.has(at.job)) throw fail('FEDLORA_ERR_INTERNAL', `lineage of ${jobId} loops at job ${at.job}`);
    seen.add(at.job);
    const upTo = at.version;
    const rows: AdapterVersionRow[] = store.adapterVersions(at.job).filter((r) => upTo === undefined || r.version <= upTo);
    out.unshift(rows);
    const init: InitAdapterRef | undefined = rows.length ? manifestOf(rows[0]).init_adapter : undefined;
    at = init ? { job: init.job_id, version: init.version } : null;
  }
  return out.flat();
}

export interface VersionNode {
  job_id: string;
  job_name: string;
  version: number;
  round: number;
  manifest_sha256: string;
  contributing_sites: number;
  created: string;
  /** The previous version of the same job, or for a v0 the version of another job it continues. */
  parent: { job_id: string; version: number } | null;
}

/** Every published (global) version of every job, parents first within each job. */
export function versionTree(store: CoordinatorStore): VersionNode[] {
  const out: VersionNode[] = [];
  for (const job of store.jobs()) {
    for (const row of store.adapterVersions(job.id)) {
      const m = manifestOf(row);
      const parent = row.version > 0 ? { job_id: job.id, version: row.version - 1 } : m.init_adapter ? { job_id: m.init_adapter.job_id, version: m.init_adapter.version } : null;
      out.push({
        job_id: job.id, job_name: job.name, version: row.version, round: row.round, manifest_sha256: row.manifest_sha256,
        contributing_sites: m.contributing_sites, created: new Date(row.created_ms).toISOString(), parent,
      });
    }
  }
  return out;
}
