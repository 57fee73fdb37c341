// Site data commands: `fedlora site ingest`, `fedlora site data report|build`, `fedlora synth`.

import { join, resolve } from 'node:path';
import { existsSync } from 'node:fs';
import type { CliGroups } from '../groups.ts';
import { fail } from '../../shared/errors.ts';
import {
  ingestIntoSite, loadDataConfig, openSiteDataStore, siteDbPath, dataReport, formatReport, buildDatasets, writeDatasetFiles,
  generateSites, backfillFields, DEID_DISABLED_WARNING, type IngestFormat, type IngestSummary,
  type DataConfig,
} from '../../site-agent/data/index.ts';
import { chatExample, DEFAULT_ALLOWED } from '../../site-agent/data/dataset/build.ts';
import type { CaseRecord } from '../../site-agent/data/types.ts';
import { TRAINING_LABEL_POLICIES, type TrainingLabelPolicy } from '../../site-agent/data/labels/effective.ts';
import { loadSiteConfig, SITE_CONFIG_NAMES } from '../../site-agent/config.ts';

const siteDirOf = (o: { siteDir?: string }): string => resolve(o.siteDir ?? process.env.FEDLORA_SITE_DIR ?? '.');

function printSummary(s: IngestSummary): void {
  const w = (t: string) => process.stdout.write(t + '\n');
  for (const warn of s.warnings) process.stderr.write(warn === DEID_DISABLED_WARNING ? `\n${warn}\n\n` : `note: ${warn}\n`);
  for (const f of s.files) {
    // FHIR cases exist only after all files are joined, so per file only quarantines are known.
    w(`${f.path}: ${s.format === 'fhir' ? 'resources staged,' : `accepted ${f.accepted}, duplicates ${f.duplicates},`} quarantined ${f.quarantined}${f.error ? `  FILE ERROR ${f.error}` : ''}`);
  }
  w(`accepted: ${s.accepted}`);
  w(`duplicates: ${s.duplicates}`);
  w(`quarantined: ${s.quarantined}`);
  for (const [r, n] of Object.entries(s.quarantineByReason).sort()) w(`  ${r}: ${n}`);
  if (s.nearDuplicates.pairs || s.nearDuplicates.merged) w(`near-duplicates: ${s.nearDuplicates.pairs} pair(s) with stored records${s.nearDuplicates.merged ? `, ${s.nearDuplicates.merged} near-copies merged (not stored)` : ''}`);
  if (Object.keys(s.ignoredResources).length) {
    w(`ignored FHIR resources (not used by the pipeline, not quarantined): ${Object.entries(s.ignoredResources).map(([t, n]) => `${t} ${n}`).join(', ')}`);
  }
  if (s.orphanResources) w(`ignored FHIR resources without an encounter in the input: ${s.orphanResources}`);
  w(s.deid.enabled ? `de-identification: on (${Object.entries(s.deid.phiSpans).map(([t, n]) => `${t} ${n}`).join(', ') || 'no identifiers found'})` : 'de-identification: OFF');
}

/** Tokens of each record's SFT example as the model sees it (chat template applied when the
 *  model has one, else the plain record text). */
async function tokenCounter(modelDir: string, config: DataConfig): Promise<(rec: CaseRecord, text: string) => number> {
  const { loadTokenizer } = await import('../../site-agent/engine/index.ts'); // loads ONNX Runtime: only when asked
  const tok = loadTokenizer(modelDir);
  const allowed = new Set(DEFAULT_ALLOWED);
  return (rec, text) => {
    const rendered = tok.hasChatTemplate ? tok.applyChatTemplate(chatExample(rec, allowed, config).messages) : text;
    return tok.encode(rendered, { addSpecialTokens: false }).length;
  };
}

/** --labels, else the site config's policy.training_labels, else any. */
function trainingLabelsOf(siteDir: string, flag: string | undefined): TrainingLabelPolicy {
  if (flag !== undefined) {
    if (!(TRAINING_LABEL_POLICIES as readonly string[]).includes(flag)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `--labels ${flag}: expected ${TRAINING_LABEL_POLICIES.join(' or ')}`);
    return flag as TrainingLabelPolicy;
  }
  return SITE_CONFIG_NAMES.some((n) => existsSync(join(siteDir, n))) ? loadSiteConfig(siteDir).policy.training_labels : 'any';
}

export function register(g: CliGroups): void {
  g.site
    .command('ingest')
    .description('ingest hospital records (CSV, JSONL, FHIR R4 Bundles/NDJSON) into the site database, de-identified')
    .requiredOption('--format <format>', 'csv | jsonl | fhir')
    .option('--site-dir <dir>', 'site directory (default: $FEDLORA_SITE_DIR or .)')
    .option('--config <file>', 'site config (site.yaml/json) or a data-section file; default: the site dir\'s site.yaml')
    .option('--json', 'print the summary as JSON')
    .argument('<paths...>', 'input files')
    .action(async (paths: string[], o: { format: string; siteDir?: string; config?: string; json?: boolean }) => {
      if (!['csv', 'jsonl', 'fhir'].includes(o.format)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `--format ${o.format}: expected csv, jsonl or fhir`);
      const s = await ingestIntoSite(siteDirOf(o), paths, { format: o.format as IngestFormat, configFile: o.config });
      if (o.json) {
        if (!s.deid.enabled) process.stderr.write(`\n${DEID_DISABLED_WARNING}\n\n`);
        process.stdout.write(JSON.stringify(s, null, 2) + '\n');
      } else printSummary(s);
      if (s.files.some((f) => f.error)) process.exitCode = 2;
    });

  const data = g.site.command('data').description('the site\'s ingested data');
  data
    .command('report')
    .description('counts per department/diagnosis, length distribution, quarantine reasons, structured fields with extraction precision/recall, near-duplicates')
    .option('--site-dir <dir>', 'site directory')
    .option('--model <dir>', 'base model folder: also report token lengths (of the SFT example, chat template applied)')
    .option('--config <file>', 'site config or data-section file (prompt templates for token counts)')
    .option('--json', 'print as JSON')
    .action(async (o: { siteDir?: string; model?: string; config?: string; json?: boolean }) => {
      const db = siteDbPath(siteDirOf(o));
      if (!existsSync(db)) throw fail('FEDLORA_ERR_NOT_FOUND', `${db}: no site database; run "fedlora site ingest" first`);
      const config = loadDataConfig(siteDirOf(o), o.config);
      const count = o.model ? await tokenCounter(resolve(o.model), config) : undefined;
      const store = openSiteDataStore(db);
      try {
        const rep = dataReport(store, count, config.cleaning);
        process.stdout.write((o.json ? JSON.stringify(rep, null, 2) : formatReport(rep)) + '\n');
      } finally {
        store.close();
      }
    });
  data
    .command('extract')
    .description('read structured fields (vitals, labs, medications) and near-duplicate signatures for records stored before extraction, from their stored de-identified text')
    .option('--site-dir <dir>', 'site directory')
    .option('--config <file>', 'site config or data-section file')
    .option('--json', 'print as JSON')
    .action((o: { siteDir?: string; config?: string; json?: boolean }) => {
      const siteDir = siteDirOf(o);
      const db = siteDbPath(siteDir);
      if (!existsSync(db)) throw fail('FEDLORA_ERR_NOT_FOUND', `${db}: no site database; run "fedlora site ingest" first`);
      const config = loadDataConfig(siteDir, o.config);
      const store = openSiteDataStore(db);
      try {
        const s = backfillFields(store.db, config.fields);
        if (o.json) process.stdout.write(JSON.stringify(s, null, 2) + '\n');
        else {
          process.stdout.write(`records given structured fields: ${s.records}${s.signaturesOnly ? ` (${s.signaturesOnly} more given a near-duplicate signature only: data.fields.extract is false)` : ''}\n`);
          process.stdout.write(`near-duplicate pairs found: ${s.nearDuplicatePairs}\n`);
          for (const [f, n] of Object.entries(s.wouldDrop)) process.stdout.write(`note: ${n} stored record(s) lack ${f}, which data.fields.missing.${f}: drop would refuse at ingest (kept)\n`);
        }
      } finally {
        store.close();
      }
    });
  data
    .command('build')
    .description('assign stored splits and write train/validation/test/choices JSONL')
    .option('--site-dir <dir>', 'site directory')
    .option('--config <file>', 'site config or data-section file')
    .option('--allowed-fields <list>', 'comma-separated fields the policy allows (default: all but icd10)')
    .option('--labels <policy>', 'any | confirmed: which labels may be targets (default: the site policy\'s training_labels, else any)')
    .requiredOption('--out <dir>', 'output folder')
    .action((o: { siteDir?: string; config?: string; allowedFields?: string; labels?: string; out: string }) => {
      const siteDir = siteDirOf(o);
      const config = loadDataConfig(siteDir, o.config);
      const trainingLabels = trainingLabelsOf(siteDir, o.labels);
      const store = openSiteDataStore(siteDbPath(siteDir));
      try {
        const ds = buildDatasets(store, { config, allowedFields: o.allowedFields?.split(',').map((s) => s.trim()), trainingLabels });
        const { files } = writeDatasetFiles(resolve(o.out), ds);
        process.stdout.write(`train ${ds.train.length}, validation ${ds.validation.length}, test ${ds.test.length}, choices ${ds.choices.length}\n`);
        const ex = ds.labels.excluded;
        if (ex.disputed || ex.unconfirmed) process.stdout.write(`left out (labels: ${trainingLabels}): ${ex.unconfirmed} without a confirmed label, ${ex.disputed} in dispute\n`);
        for (const [k, p] of Object.entries(files)) process.stdout.write(`  ${k}: ${p}\n`);
      } finally {
        store.close();
      }
    });

  g.program
    .command('synth')
    .description('generate synthetic hospital records (non-IID sites, planted identifiers)')
    .requiredOption('--sites <n>', 'number of sites', (v) => parseInt(v, 10))
    .requiredOption('--records <m>', 'records per site', (v) => parseInt(v, 10))
    .requiredOption('--out <dir>', 'output folder (DIR/site-<k>/records.<ext>)')
    .option('--lang <lang>', 'zh | en | mixed', 'mixed')
    .option('--skew <x>', '0..1: share of site i\'s cases from department i', parseFloat, 0.6)
    .option('--format <format>', 'csv | jsonl | fhir', 'csv')
    .option('--seed <n>', 'random seed', (v) => parseInt(v, 10), 42)
    .action((o: { sites: number; records: number; out: string; lang: string; skew: number; format: string; seed: number }) => {
      const bad = (flag: string, why: string) => fail('FEDLORA_ERR_INVALID_ARGUMENT', `${flag}: ${why}`);
      if (!Number.isInteger(o.sites) || o.sites < 1) throw bad('--sites', 'expected a positive integer');
      if (!Number.isInteger(o.records) || o.records < 1) throw bad('--records', 'expected a positive integer');
      if (!['zh', 'en', 'mixed'].includes(o.lang)) throw bad('--lang', 'expected zh, en or mixed');
      if (!(o.skew >= 0 && o.skew <= 1)) throw bad('--skew', 'expected a number in [0, 1]');
      if (!['csv', 'jsonl', 'fhir'].includes(o.format)) throw bad('--format', 'expected csv, jsonl or fhir');
      if (!Number.isInteger(o.seed)) throw bad('--seed', 'expected an integer');
      const sites = generateSites({
        sites: o.sites, records: o.records, out: resolve(o.out), lang: o.lang as 'zh', skew: o.skew, format: o.format as 'csv', seed: o.seed,
      });
      for (const s of sites) process.stdout.write(`${s.name}: ${s.records.length} records, ${s.planted.length} planted identifiers → ${s.file}\n`);
    });
}
