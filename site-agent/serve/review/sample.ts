// Cases for the doctors' review: the candidate adapter answers a sample of held-out (test split)
// records, as the assistant would serve it (site instructions, disclaimer, no retrieval: the
// review rates the adapter, not the knowledge base). The sample is fixed by the version and the
// record (sha256 order), so sampling again adds only what is missing; whether a case needs two
// doctors is fixed the same way with the double-review fraction. The prompt is the case without
// its diagnosis, icd10 or treatment, de-identified (records ingested without de-identification go
// through the site's de-identifier first); it is stored with the answer and the version.
import type Database from 'better-sqlite3-multiple-ciphers';
import { fail, isFedloraError } from '../../../shared/errors.ts';
import type { DataConfig } from '../../data/config-schema.ts';
import type { CaseRecord } from '../../data/types.ts';
import { assignSplits } from '../../data/dataset/split.ts';
import { openSiteDataStore } from '../../data/store.ts';
import { generateAnswer } from '../answer.ts';
import type { GenerationBackend } from '../backend/types.ts';
import type { ServeConfig } from '../config.ts';
import type { ServingVersion } from '../gate/serving.ts';
import { RequestQueue } from '../queue.ts';
import { suggestionPrompt } from '../workbench/suggestions.ts';
import type { SiteConfig } from '../../config.ts';
import { deidentify } from '../../data/deid/index.ts';
import { loadOrCreateSiteKey } from '../../data/site-key.ts';
import { hashOrderedSample, hashUnit } from '../../../shared/hash.ts';

export interface SampleDeps {
  db: Database.Database;
  backend: GenerationBackend;
  serve: ServeConfig;
  data: DataConfig;
  /** The site policy's allowed_fields. */
  allowedFields: readonly string[];
  deidentify: (text: string) => string;
}

export interface SampleOptions {
  adapter: ServingVersion;
  size: number;
  doubleFraction: number;
  maxNewTokens: number;
  signal?: AbortSignal;
  onProgress?: (done: number, total: number) => void;
}

/** The sampling's dependencies at a site: its settings, and its de-identifier with the site key. */
export function siteSampleDeps(siteDir: string, site: SiteConfig, db: Database.Database, backend: GenerationBackend): SampleDeps {
  const key = loadOrCreateSiteKey(siteDir, site.data.deid.keyFile);
  return { db, backend, serve: site.serve, data: site.data, allowedFields: site.policy.allowed_fields, deidentify: (t) => deidentify(t, { mode: 'placeholder', key }).text };
}

/** Whether a sampled case is rated by two doctors (fixed by version and record). */
export const needsTwo = (adapterLabel: string, recordId: string, fraction: number): boolean => hashUnit(`review-double:${adapterLabel}:${recordId}`) < fraction;

/** The held-out records the version's sample holds, in sample order. */
export function sampledRecords(db: Database.Database, adapterLabel: string, size: number): string[] {
  const ids = db.prepare("SELECT s.record_id FROM data_splits s JOIN data_records r ON r.id = s.record_id WHERE s.split = 'test'").pluck().all() as string[];
  return hashOrderedSample(ids, size, `review-sample:${adapterLabel}`);
}

/** Answer the sampled records the version has no case for yet; returns how many were added. */
export async function sampleReviewCases(d: SampleDeps, o: SampleOptions): Promise<{ added: number; cases: number; heldOut: number; tooLong: number }> {
  // The same stable patient-grouped splits training and evaluation use (assigned if not yet).
  assignSplits(openSiteDataStore(d.db), d.data.split);
  const heldOut = d.db.prepare("SELECT count(*) FROM data_splits WHERE split = 'test'").pluck().get() as number;
  if (heldOut === 0) throw fail('FEDLORA_ERR_DATASET', 'no held-out (test split) records at this site: ingest data first (fedlora site data ingest)');
  const have = new Set(d.db.prepare('SELECT record_id FROM review_cases WHERE adapter_label = ?').pluck().all(o.adapter.label) as string[]);
  const todo = sampledRecords(d.db, o.adapter.label, o.size).filter((id) => !have.has(id));
  await d.backend.useVersion(o.adapter);
  const gen = {
    config: { ...d.serve, max_tokens_limit: Math.max(d.serve.max_tokens_limit, o.maxNewTokens) },
    backend: d.backend,
    queue: new RequestQueue(1, Math.max(1, todo.length)),
    retrieve: () => [],
    serving: async () => o.adapter,
  };
  const insert = d.db.prepare(`INSERT INTO review_cases (record_id, adapter_label, job_id, version, adapter_sha256, lang, prompt, answer, needed)
    VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (adapter_label, record_id) DO NOTHING`);
  let added = 0;
  let tooLong = 0;
  for (const [i, id] of todo.entries()) {
    const row = d.db.prepare('SELECT r.json, coalesce(i.deid_enabled, 1) AS deid FROM data_records r LEFT JOIN data_ingest_runs i ON i.id = r.run_id WHERE r.id = ?').get(id) as { json: string; deid: number };
    const rec = JSON.parse(row.json) as CaseRecord;
    const messages = suggestionPrompt(rec, d.data, d.allowedFields).messages.map((m) => ({ ...m, content: row.deid ? m.content : d.deidentify(m.content) }));
    const a = await generateAnswer(gen, { kind: 'chat', messages, maxTokens: o.maxNewTokens, temperature: 0, signal: o.signal ?? new AbortController().signal }).catch((e: unknown) => {
      // A case longer than the assistant accepts (serve.max_prompt_tokens) could not be asked either: left out, counted.
      if (isFedloraError(e) && e.code === 'FEDLORA_ERR_PROMPT_TOO_LONG') return null;
      throw e;
    });
    if (a === null) {
      tooLong++;
      continue;
    }
    if (a.finish === 'cancelled') throw fail('FEDLORA_ERR_UNAVAILABLE', 'sampling for review cancelled');
    const prompt = messages.filter((m) => m.role === 'user').map((m) => m.content).join('\n\n');
    // Persisted one by one: an interrupted run keeps what it generated.
    added += insert.run(id, o.adapter.label, o.adapter.jobId, o.adapter.version, o.adapter.sha256, rec.lang, prompt, a.content, needsTwo(o.adapter.label, id, o.doubleFraction) ? 2 : 1).changes;
    o.onProgress?.(i + 1, todo.length);
  }
  const cases = d.db.prepare('SELECT count(*) FROM review_cases WHERE adapter_label = ?').pluck().get(o.adapter.label) as number;
  return { added, cases, heldOut, tooLong };
}
