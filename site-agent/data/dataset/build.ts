// Datasets the engine trains and evaluates on, built from the stored records and splits:
// SFT chat examples (case → diagnosis + reasoning + treatment) and multiple-choice items
// (case → which of K diagnoses) from the held-out test split. Only the fields the site
// policy allows (policy.allowed_fields) appear in any text. Each record's diagnosis is its label
// under policy.training_labels (labels/effective.ts): doctors' labels replace the export's column,
// and records without an allowed label are left out (counted, with the label each example used).
// For a round of a later data period (periods.ts) training takes the period's new records plus a
// replay sample of earlier ones, and the held-out examples are tagged earlier/new.

import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import type { ChatExample, ChoiceItem, CaseRecord } from '../types.ts';
import type { SiteDataStore, Split } from '../store.ts';
import { defaultDataConfig, type DataConfig } from '../config-schema.ts';
import { assignSplits, SPLITS } from './split.ts';
import { TEMPLATES, render, caseVars, CASE_FIELDS, type CaseField } from './prompts.ts';
import { hasCjk } from '../clean.ts';
import { fail } from '../../../shared/errors.ts';
import { labelLookup, type Exclusion, type TrainingLabelPolicy } from '../labels/effective.ts';
import { importAssistantConfirmations } from '../labels/assistant.ts';
import { diagnosisText } from '../labels/keys.ts';
import type { LabelUse } from '../labels/training-sets.ts';
import { ageOf, replayCount, replaySample, runsOfRecords, type DataAge, type DataPeriod } from './periods.ts';

export interface BuildOptions {
  /** Data config (split ratios/seed, prompt templates, choices); default: defaults. */
  config?: DataConfig;
  /** Fields that may be used (the site policy's allowed_fields); default: all but icd10. */
  allowedFields?: readonly string[];
  /** Cap on training examples (training.max_train_examples); the first N in stored order. */
  maxTrainExamples?: number | null;
  /** Which labels may be targets (the site policy's training_labels); default: any. */
  trainingLabels?: TrainingLabelPolicy;
  /** A round of a data period: new records + a replay sample of earlier ones (periods.ts). */
  period?: DataPeriod;
}

export interface BuiltDatasets {
  train: ChatExample[];
  validation: ChatExample[];
  test: ChatExample[];
  choices: ChoiceItem[];
  /** Record ids per split, in the order of the examples. */
  ids: Record<Split, string[]>;
  /** Records left out because they have no diagnosis (cannot be a target). */
  skipped: number;
  /** The label each example used, and records left out by the label policy. */
  labels: { policy: TrainingLabelPolicy; uses: LabelUse[]; excluded: Record<Exclusion, number> };
  /** Earlier or new, per validation example (in order); choice items carry it as subgroups.data. */
  validationAge: DataAge[];
  /** With a period: the training set's new records, replayed earlier ones, earlier ones available. */
  replay: { fresh: number; replayed: number; earlier: number } | null;
}

export const DEFAULT_ALLOWED: CaseField[] = ['department', 'chiefComplaint', 'history', 'exam', 'labs', 'diagnosis', 'treatment'];
const LETTERS = 'ABCDEFGHIJ';

const h = (s: string): string => createHash('sha256').update(s).digest('hex');

function langOf(rec: CaseRecord, cfg: DataConfig): 'zh' | 'en' {
  return cfg.prompt.lang === 'auto' ? rec.lang : cfg.prompt.lang;
}

function userText(rec: CaseRecord, allowed: Set<CaseField>, cfg: DataConfig, lang: 'zh' | 'en'): string {
  return render(cfg.prompt.userTemplate ?? TEMPLATES[lang].user, caseVars(rec, allowed, lang));
}

function systemMessages(cfg: DataConfig, lang: 'zh' | 'en'): ChatExample['messages'] {
  const sys = cfg.prompt.system ?? TEMPLATES[lang].system;
  return sys ? [{ role: 'system', content: sys }] : [];
}

export function chatExample(rec: CaseRecord, allowed: Set<CaseField>, cfg: DataConfig): ChatExample {
  const lang = langOf(rec, cfg);
  const vars = caseVars(rec, allowed, lang);
  return {
    messages: [
      ...systemMessages(cfg, lang),
      { role: 'user', content: userText(rec, allowed, cfg, lang) },
      { role: 'assistant', content: render(cfg.prompt.assistantTemplate ?? TEMPLATES[lang].assistant, vars) },
    ],
  };
}

/** Case → which of K diagnoses (data.choices.format: listed options, or cloze: the training prompt
 *  and each option scored as its answer). Distractors come from the site's other diagnoses in the same
 *  language (plus data.choices.extraDiagnoses); their choice and the answer's position are
 *  fixed by the split seed and the record id. */
export function choiceItem(rec: CaseRecord, pool: string[], allowed: Set<CaseField>, cfg: DataConfig): ChoiceItem | null {
  const dx = rec.diagnosis!;
  const lang = langOf(rec, cfg);
  const others = pool.filter((d) => d !== dx && hasCjk(d) === hasCjk(dx));
  const k = Math.min(cfg.choices.k, others.length + 1);
  if (k < 2) return null;
  const seed = `${cfg.split.seed}:${rec.id}`;
  const distractors = others.map((d) => ({ d, o: h(`${seed}:${d}`) })).sort((a, b) => (a.o < b.o ? -1 : 1)).slice(0, k - 1).map((x) => x.d);
  const answer = parseInt(h(`${seed}:answer`).slice(0, 8), 16) % k;
  const options = [...distractors];
  options.splice(answer, 0, dx);
  const t = TEMPLATES[lang];
  const list = options.map((o, i) => `${LETTERS[i]}. ${o}`).join('\n');
  const allowedNoDx = new Set([...allowed].filter((f) => f !== 'diagnosis' && f !== 'icd10' && f !== 'treatment'));
  // The case text without the SFT instruction line of the built-in template.
  const tpl = cfg.prompt.userTemplate ?? t.user.split('\n').slice(1).join('\n');
  const body = render(tpl, caseVars(rec, allowedNoDx, lang));
  const content = cfg.choices.format === 'cloze' ? userText(rec, allowedNoDx, cfg, lang) : `${body}\n${t.choiceQuestion}\n${list}\n${t.choiceInstruction}`;
  return {
    prompt: [...systemMessages(cfg, lang), { role: 'user', content }],
    options,
    answer,
    label: dx,
    subgroups: { ...(rec.sex ? { sex: rec.sex } : {}), ...(rec.ageBand ? { age_band: rec.ageBand } : {}) },
  };
}

export function buildDatasets(store: SiteDataStore, opts: BuildOptions = {}): BuiltDatasets {
  const cfg = opts.config ?? defaultDataConfig();
  const allowedList = opts.allowedFields ?? DEFAULT_ALLOWED;
  for (const f of allowedList) {
    if (!(CASE_FIELDS as readonly string[]).includes(f)) throw fail('FEDLORA_ERR_CONFIG', `policy.allowed_fields: unknown field "${f}" (known: ${CASE_FIELDS.join(', ')})`);
  }
  const allowed = new Set(allowedList as CaseField[]);
  if (!allowed.has('diagnosis')) {
    throw fail('FEDLORA_ERR_POLICY', 'policy.allowed_fields does not include "diagnosis": no training target can be built from this site\'s data');
  }
  importAssistantConfirmations(store.db);
  if (store.countRecords() === 0) throw fail('FEDLORA_ERR_DATASET', 'no records in the site database; run "fedlora site ingest" first');
  assignSplits(store, cfg.split);

  const splitOf = store.splits();
  const policy = opts.trainingLabels ?? 'any';
  const labels = labelLookup(store.db, policy);
  const out: BuiltDatasets = {
    train: [], validation: [], test: [], choices: [], ids: { train: [], validation: [], test: [] }, skipped: 0,
    labels: { policy, uses: [], excluded: { disputed: 0, unconfirmed: 0 } }, validationAge: [], replay: null,
  };
  const period = opts.period?.earlierUpTo != null ? opts.period : undefined;
  const runs = period ? runsOfRecords(store.db) : null;
  const age = (id: string): DataAge => ageOf(period, runs?.get(id) ?? 0);
  const pool = new Set<string>(cfg.choices.extraDiagnoses);
  const testRecs: CaseRecord[] = [];
  const earlierTrain: { rec: CaseRecord; use: LabelUse }[] = [];
  for (const stored of store.iterateRecords()) {
    const label = labels.labelOf(stored.id, stored.diagnosis ?? null);
    if (label === null) {
      out.skipped++;
      continue;
    }
    if (typeof label === 'string') {
      out.labels.excluded[label]++;
      continue;
    }
    const rec = withLabel(stored, label.diagnosis, label.icd10, label.source === 'export');
    pool.add(label.diagnosis);
    const s = splitOf.get(rec.id);
    if (!s) continue;
    const use: LabelUse = { recordId: rec.id, split: s, labelId: label.labelId, source: label.source };
    if (s === 'train' && period && age(rec.id) === 'earlier') {
      earlierTrain.push({ rec, use }); // replay candidates, sampled below
      continue;
    }
    if (s === 'train' && opts.maxTrainExamples != null && out.train.length >= opts.maxTrainExamples) continue;
    out[s].push(chatExample(rec, allowed, cfg));
    out.ids[s].push(rec.id);
    out.labels.uses.push(use);
    if (s === 'validation') out.validationAge.push(age(rec.id));
    if (s === 'test') testRecs.push(rec);
  }
  if (period) {
    const fresh = out.train.length;
    const n = replayCount(fresh, earlierTrain.length, period.replayFraction);
    const chosen = replaySample(earlierTrain.map((e) => e.rec.id), n, period.sampleKey);
    for (const e of earlierTrain.filter((x) => chosen.has(x.rec.id))) {
      out.train.push(chatExample(e.rec, allowed, cfg));
      out.ids.train.push(e.rec.id);
      out.labels.uses.push(e.use);
    }
    out.replay = { fresh, replayed: n, earlier: earlierTrain.length };
  }
  const poolList = [...pool].sort();
  for (const rec of testRecs) {
    const item = choiceItem(rec, poolList, allowed, cfg);
    if (item && period) item.subgroups = { ...item.subgroups, data: age(rec.id) };
    if (item) out.choices.push(item);
  }
  return out;
}

/** The record with its training label: a doctor's code replaces the export's; a label without a
 *  code keeps the export's code only when it names the same diagnosis. */
function withLabel(rec: CaseRecord, diagnosis: string, icd10: string | null, fromExport: boolean): CaseRecord {
  if (fromExport) return rec;
  const sameAsExport = rec.diagnosis !== undefined && diagnosisText(rec.diagnosis) === diagnosisText(diagnosis);
  return { ...rec, diagnosis, icd10: icd10 ?? (sameAsExport ? rec.icd10 : undefined) };
}

/** Write train/validation/test/choices JSONL (the engine's chat format) + a manifest with
 *  counts and sha256 per file. Files are written via a temp name and renamed (never half-written). */
export function writeDatasetFiles(dir: string, ds: BuiltDatasets): { files: Record<string, string>; manifest: Record<string, unknown> } {
  mkdirSync(dir, { recursive: true });
  const files: Record<string, string> = {};
  const manifest: Record<string, unknown> = { createdAt: new Date().toISOString(), files: {} };
  const write = (name: string, rows: unknown[]): void => {
    const text = rows.map((r) => JSON.stringify(r)).join('\n') + (rows.length ? '\n' : '');
    const p = join(dir, name);
    writeFileSync(p + '.tmp', text);
    renameSync(p + '.tmp', p);
    files[name.replace('.jsonl', '')] = p;
    (manifest.files as Record<string, unknown>)[name] = { count: rows.length, sha256: h(text) };
  };
  for (const s of SPLITS) write(`${s}.jsonl`, ds[s]);
  write('choices.jsonl', ds.choices);
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
  return { files, manifest };
}
