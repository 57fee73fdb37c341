// Public API of the site data pipeline (ingest → clean → de-identify → store → datasets).

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import YAML from 'yaml';
import { parseDataConfig, type DataConfig } from './config-schema.ts';
import { openSiteDataStore, siteDbPath, type SiteDataStore } from './store.ts';
import { loadOrCreateSiteKey } from './site-key.ts';
import { ingestFiles, type IngestFormat, type IngestSummary } from './ingest/index.ts';
import type { Deidentifier } from './deid-bridge.ts';
import { fail } from '../../shared/errors.ts';
import { SITE_CONFIG_NAMES } from '../config.ts';

export { DataConfigSchema, parseDataConfig, defaultDataConfig, DEFAULT_ABBREVIATIONS, type DataConfig } from './config-schema.ts';
export { openSiteDataStore, SiteDataStore, siteDbPath, type Split } from './store.ts';
export { ingestFiles, DEID_DISABLED_WARNING, type IngestSummary, type IngestOptions, type IngestFormat } from './ingest/index.ts';
export { buildDatasets, writeDatasetFiles, chatExample, DEFAULT_ALLOWED, type BuiltDatasets, type BuildOptions } from './dataset/build.ts';
export { assignSplits } from './dataset/split.ts';
export { recordTrainingSet, type LabelUse } from './labels/training-sets.ts';
export { labelReport, formatLabelReport, type LabelReport } from './labels/report.ts';
export { dataReport, formatReport, type DataReport } from './report.ts';
export { backfillFields, type BackfillSummary } from './extract/backfill.ts';
export { loadOrCreateSiteKey, patientPseudonym } from './site-key.ts';
export { generateSites, toCsv, type SynthOptions, type SynthSite, type SynthRecord, type PlantedPhi } from './synth/generate.ts';
export { recordToBundle } from './synth/fhir-out.ts';
export { DIAGNOSES, DEPARTMENTS } from './synth/catalog.ts';

/** The `data:` section from an explicit file (a whole site config, or just a data section)
 *  or from the site dir's site.yaml/site.json; defaults when there is none. */
export function loadDataConfig(siteDir: string, configFile?: string): DataConfig {
  const file = configFile ?? SITE_CONFIG_NAMES.map((n) => join(siteDir, n)).find((p) => existsSync(p));
  if (!file) return parseDataConfig({});
  let raw: unknown;
  try {
    const text = readFileSync(file, 'utf8');
    raw = file.endsWith('.json') ? JSON.parse(text) : YAML.parse(text);
  } catch (e) {
    throw fail('FEDLORA_ERR_CONFIG', `${file}: cannot read config (${(e as Error).message})`);
  }
  const obj = (raw ?? {}) as Record<string, unknown>;
  // A full site config has a `model` or `data` key; otherwise the file is the data section itself.
  const section = 'data' in obj || 'model' in obj ? obj.data : obj;
  return parseDataConfig(section ?? {}, file);
}

/** Ingest files into <siteDir>/site.sqlite with the site's config and key. */
export async function ingestIntoSite(
  siteDir: string,
  paths: string[],
  opts: { format: IngestFormat; configFile?: string; config?: DataConfig; deidentifier?: Deidentifier },
): Promise<IngestSummary> {
  const config = opts.config ?? loadDataConfig(siteDir, opts.configFile);
  const key = loadOrCreateSiteKey(siteDir, config.deid.keyFile);
  const store: SiteDataStore = openSiteDataStore(siteDbPath(siteDir));
  try {
    return await ingestFiles(store, paths, { format: opts.format, config, key, deidentifier: opts.deidentifier });
  } finally {
    store.close();
  }
}
