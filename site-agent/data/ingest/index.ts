// `ingestFiles`: the one entry point of ingest (CLI, site agent, demo). Streams each file,
// records every file in the hash index, and returns a summary of accepted / duplicates /
// quarantined-by-reason. De-identification is mandatory unless explicitly disabled by config
// (then the run is recorded as such and the summary carries a loud warning).

import { statSync } from 'node:fs';
import { resolve } from 'node:path';
import type { DataConfig } from '../config-schema.ts';
import type { SiteDataStore } from '../store.ts';
import type { PhiType } from '../types.ts';
import { RecordSink } from './sink.ts';
import { ingestCsv, ingestJsonl } from './tabular.ts';
import { FhirStager, stageFhirFile, assembleFhirCases } from './fhir.ts';
import { loadDeidentifier, type Deidentifier } from '../deid-bridge.ts';
import { fail, isFedloraError } from '../../../shared/errors.ts';
import { AuditLog } from '../../../shared/audit.ts';
import { sha256File } from '../../../shared/hash.ts';

/** The site agent's tamper-evident audit table in site.sqlite (shared with site-agent/agent). */
const SITE_AUDIT_TABLE = 'site_audit';

export type IngestFormat = 'csv' | 'jsonl' | 'fhir';

export interface IngestOptions {
  format: IngestFormat;
  config: DataConfig;
  /** The site's secret key (loadOrCreateSiteKey). */
  key: Buffer;
  /** Inject a de-identifier (tests); default: the site-agent/data/deid module. */
  deidentifier?: Deidentifier;
}

export interface FileSummary {
  path: string;
  sha256: string;
  bytes: number;
  accepted: number;
  duplicates: number;
  quarantined: number;
  /** A file-level problem (the file's records before it are kept). */
  error?: string;
}

export interface IngestSummary {
  runId: number;
  format: IngestFormat;
  files: FileSummary[];
  accepted: number;
  duplicates: number;
  quarantined: number;
  quarantineByReason: Record<string, number>;
  /** FHIR: resource types not used by the pipeline, ignored (not quarantined), with counts. */
  ignoredResources: Record<string, number>;
  /** FHIR: resources that link to no encounter in the input (ignored). */
  orphanResources: number;
  /** Near-duplicate pairs with records stored before (data.fields.near_duplicates); merged: near-copies of the same patient's record not stored. */
  nearDuplicates: { pairs: number; merged: number };
  deid: { enabled: boolean; phiSpans: Partial<Record<PhiType, number>> };
  /** Non-empty when something needs the operator's attention (printed loudly by the CLI). */
  warnings: string[];
}

export const DEID_DISABLED_WARNING =
  '!!! DE-IDENTIFICATION IS DISABLED (data.deid.enabled: false): records were stored WITH their identifiers. This run is recorded in data_events. !!!';

/** Resolve the de-identifier or refuse: disabling it requires two explicit config flags. */
async function resolveDeid(cfg: DataConfig, key: Buffer, injected?: Deidentifier): Promise<Deidentifier | null> {
  if (!cfg.deid.enabled) {
    if (!cfg.deid.i_understand_records_keep_phi) {
      throw fail('FEDLORA_ERR_DEID', 'data.deid.enabled is false but data.deid.i_understand_records_keep_phi is not true; de-identification can only be turned off with both flags');
    }
    return null;
  }
  return injected ?? (await loadDeidentifier(key, cfg.deid.mode));
}

export async function ingestFiles(store: SiteDataStore, paths: string[], opts: IngestOptions): Promise<IngestSummary> {
  const { config: cfg, format } = opts;
  if (!['csv', 'jsonl', 'fhir'].includes(format)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `--format ${format}: expected csv, jsonl or fhir`);
  for (const p of paths) {
    try {
      if (!statSync(p).isFile()) throw new Error('not a regular file');
    } catch (e) {
      throw fail('FEDLORA_ERR_IO', `${p}: cannot read input (${(e as Error).message})`);
    }
  }
  const deid = await resolveDeid(cfg, opts.key, opts.deidentifier);
  const runId = store.startRun(format, deid !== null);
  const warnings: string[] = [];
  const audit = new AuditLog(store.db, SITE_AUDIT_TABLE);
  if (!deid) {
    // Recorded before a single record is stored without de-identification.
    warnings.push(DEID_DISABLED_WARNING);
    store.recordEvent('deid_disabled', { runId, files: paths.map((p) => resolve(p)), at: new Date().toISOString() });
    audit.append('site-agent', 'deid_disabled', `ingest:${runId}`, { files: paths.map((p) => resolve(p)), config: 'data.deid.enabled=false, i_understand_records_keep_phi=true' });
  }
  const sink = new RecordSink(store, cfg, opts.key, deid, runId, format === 'fhir');
  const stager = format === 'fhir' ? new FhirStager(store, runId, sink, cfg.maxRecordBytes) : null;
  const files: FileSummary[] = [];
  try {
    for (const path of paths) {
      const before = { ...sink.counts };
      const sha = await sha256File(path);
      const fs: FileSummary = { path, sha256: sha, bytes: statSync(path).size, accepted: 0, duplicates: 0, quarantined: 0 };
      try {
        if (format === 'csv') warnings.push(...(await ingestCsv(path, sha, cfg, sink)));
        else if (format === 'jsonl') await ingestJsonl(path, sha, cfg, sink);
        else await stageFhirFile(path, sha, cfg, stager!, sink);
      } catch (e) {
        if (!isFedloraError(e)) throw e;
        // A file-level problem (bad header, unreadable): quarantine it, keep the other files.
        fs.error = e.toString();
        sink.quarantine(e.code === 'FEDLORA_ERR_MAPPING' ? 'mapping' : e.code === 'FEDLORA_ERR_ENCODING' ? 'encoding' : 'file_error', path, e.message, `${sha}:file`);
      }
      sink.flush();
      fs.accepted = sink.counts.accepted - before.accepted;
      fs.duplicates = sink.counts.duplicates - before.duplicates;
      fs.quarantined = sink.counts.quarantined - before.quarantined;
      files.push(fs);
    }
    let orphanResources = 0;
    if (stager) {
      // FHIR cases exist only after the join, so per-file accepted counts stay 0; totals are below.
      orphanResources = assembleFhirCases(store, runId, sink).orphans;
      sink.flush();
    }
    for (const f of files) store.recordFile({ ...f, size: f.bytes, runId });
    const summary: IngestSummary = {
      runId,
      format,
      files,
      accepted: sink.counts.accepted,
      duplicates: sink.counts.duplicates,
      quarantined: sink.counts.quarantined,
      quarantineByReason: sink.counts.byReason,
      ignoredResources: stager?.ignored ?? {},
      orphanResources,
      nearDuplicates: { pairs: sink.counts.nearDuplicates, merged: sink.counts.merged },
      deid: { enabled: deid !== null, phiSpans: sink.counts.phiSpans },
      warnings,
    };
    store.finishRun(runId, summary);
    audit.append('site-agent', 'data_ingest', `ingest:${runId}`, {
      format, deid: deid !== null, accepted: summary.accepted, duplicates: summary.duplicates, quarantined: summary.quarantined,
      files: files.map((f) => ({ sha256: f.sha256, bytes: f.bytes })),
    });
    return summary;
  } finally {
    sink.close();
  }
}
