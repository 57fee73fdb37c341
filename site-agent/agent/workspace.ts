// Everything the agent keeps at the site between tasks: the base model (checked against the
// job's manifest), where verified global adapters live, the training file and the evaluation set
// built from the site store, and the local-only baseline adapter. Nothing in here is ever sent
// as is; evaluation itself is the site's evaluator's (evaluation.ts).

import { mkdirSync, existsSync, writeFileSync, renameSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type Database from 'better-sqlite3-multiple-ciphers';
import type { SiteConfig } from '../config.ts';
import type { AdapterWeights, LoraConfig } from '../../shared/lora/types.ts';
import type { AgentLogger } from './task-context.ts';
import { readPeftAdapter, writePeftAdapter } from '../../shared/lora/peft.ts';
import { readCheckpoint, computeModelManifestAsync, loadTokenizer, chatToExample, type Checkpoint, type Tokenizer } from '../engine/index.ts';
import { initLoraAdapter } from '../../shared/lora/init.ts';
import { openSiteDataStore, buildDatasets, recordTrainingSet } from '../data/index.ts';
import { enterDataPeriod, type DataPeriod } from '../data/dataset/periods.ts';
import type { WireTask } from './wire.ts';
import { fail } from '../../shared/errors.ts';
import { readSharedSet, sharedChoiceItems } from '../data/dataset/shared-set.ts';
import type { ChoiceItem } from '../data/types.ts';
import { choiceOutcomes, figureOptionsOf, planEvaluation, siteMetrics, type EvalSet, type Evaluator, type ItemOutcomes, type SiteMetric } from './evaluation.ts';

export type { SiteMetric };

/** The site's base model, loaded once. */
export interface SiteModel {
  checkpoint(): Checkpoint;
  tokenizer(): Tokenizer;
}

export class SiteWorkspace implements SiteModel {
  private manifest: Promise<string> | null = null;
  private ckpt: Checkpoint | null = null;
  private tok: Tokenizer | null = null;
  private data: { trainFile: string; eval: EvalSet; shared: { evalSet: string; choices: EvalSet['choices'] }[] } | null = null;
  /** The data period the current task trains and evaluates in (none: every record is new). */
  private period: DataPeriod | undefined;
  /** Scores held-out sets: the built-in engine unless the site configures an external command. */
  private readonly evaluator: Evaluator;

  constructor(
    private readonly siteDir: string,
    private readonly cfg: SiteConfig,
    private readonly db: Database.Database,
    private readonly log: AgentLogger,
    evaluatorFor: (model: SiteModel) => Evaluator,
  ) {
    this.evaluator = evaluatorFor(this);
  }

  /** sha256 of the local base model's manifest (hashes cached by path, size and mtime). */
  modelManifestSha256(): Promise<string> {
    this.manifest ??= computeModelManifestAsync(this.cfg.model.path).then((m) => m.sha256);
    return this.manifest;
  }

  checkpoint(): Checkpoint {
    this.ckpt ??= readCheckpoint(this.cfg.model.path, { skipManifest: true });
    return this.ckpt;
  }

  tokenizer(): Tokenizer {
    this.tok ??= loadTokenizer(this.cfg.model.path);
    return this.tok;
  }

  taskDir(taskId: string): string {
    const d = join(this.siteDir, 'work', taskId.replace(/[^A-Za-z0-9._-]/g, '_'));
    mkdirSync(d, { recursive: true });
    return d;
  }

  /** Where a job's global adapter version is kept once verified (global-adapter.ts). */
  globalDir(jobId: string, version: number): string {
    return join(this.siteDir, 'adapters', safe(jobId), `v${version}`);
  }

  /** The data period of the task at hand (TrainSpec.data_period; a training task records it at the
   *  site): datasets are built again when it changes. */
  enterDataPeriod(task: Pick<WireTask, 'jobId' | 'train' | 'parentJob'>, o: { record: boolean }): DataPeriod {
    const period = enterDataPeriod(this.db, { jobId: task.jobId, period: task.train.dataPeriod ?? 0, parentJob: task.parentJob ?? '', replayFraction: task.train.replayFraction ?? 0 }, o);
    if (JSON.stringify(period) !== JSON.stringify(this.period)) this.data = null;
    this.period = period;
    return period;
  }

  /** Build the training file and the held-out sets from the site store (de-identified records),
   *  with the labels the site's policy allows; for a round, which label each example used is
   *  recorded at the site (label_training_sets). */
  async trainingData(round?: { jobId: string; round: number; taskId: string }): Promise<{ trainFile: string; numTrain: number }> {
    const store = openSiteDataStore(this.db);
    const dataCfg = this.cfg.data;
    const ds = buildDatasets(store, {
      config: dataCfg,
      allowedFields: this.cfg.policy.allowed_fields,
      maxTrainExamples: this.cfg.training.max_train_examples ?? undefined,
      trainingLabels: this.cfg.policy.training_labels,
      period: this.period,
    });
    if (ds.replay) this.log.info({ job_id: round?.jobId, round: round?.round, new_records: ds.replay.fresh, replayed: ds.replay.replayed, earlier_available: ds.replay.earlier }, 'data period: new records with a replay sample of earlier ones');
    if (round) {
      const set = recordTrainingSet(this.db, { ...round, policy: ds.labels.policy, uses: ds.labels.uses, excluded: ds.labels.excluded });
      this.log.info({ job_id: round.jobId, round: round.round, training_set: set.id, labels: set.counts }, 'training set built');
    }
    if (ds.train.length === 0) throw fail('FEDLORA_ERR_DATASET', `site store ${join(this.siteDir, 'site.sqlite')} has no training examples; run "fedlora site ingest" first`);
    const dir = join(this.siteDir, 'datasets');
    mkdirSync(dir, { recursive: true });
    const trainFile = join(dir, 'train.jsonl');
    writeFileSync(trainFile + '.tmp', ds.train.map((e) => JSON.stringify(e)).join('\n') + '\n');
    renameSync(trainFile + '.tmp', trainFile);
    const tok = this.tokenizer();
    const maxItems = this.cfg.evaluation.max_items;
    const maxLen = this.cfg.training.max_seq_len;
    const validation = ds.validation.map((e, i) => ({ e, data: ds.replay ? ds.validationAge[i] : undefined }));
    const allHeldOut = balancedByAge(validation, maxItems).map(({ e, data }) => ({ messages: e.messages, example: chatToExample(e.messages, tok), ...(data ? { data } : {}) }));
    const heldOut = allHeldOut.filter((h) => h.example.inputIds.length <= maxLen);
    if (heldOut.length < allHeldOut.length) {
      this.log.warn({ dropped: allHeldOut.length - heldOut.length, max_seq_len: maxLen }, 'held-out examples longer than training.max_seq_len are not evaluated');
    }
    const encode = (item: ChoiceItem) => ({
      item,
      prompt: tok.encode(tok.applyChatTemplate(item.prompt, { addGenerationPrompt: true }), { addSpecialTokens: false }),
      options: item.options.map((o) => tok.encode(o, { addSpecialTokens: false })),
    });
    const choices = balancedByAge(ds.choices.map((item) => ({ item, data: item.subgroups?.data })), maxItems).map(({ item }) => encode(item));
    // Consortium-wide sets: every item (they are the same at every site, so no cap by max_items).
    const shared = this.cfg.evaluation.shared_sets.map((s) => ({
      evalSet: `shared:${s.name}`,
      choices: sharedChoiceItems(readSharedSet(resolve(this.siteDir, s.file)), dataCfg, this.cfg.policy.allowed_fields).map(encode),
    }));
    this.data = { trainFile, eval: { heldOut, choices }, shared };
    return { trainFile, numTrain: ds.train.length };
  }

  /** Held-out metrics of an adapter (null = the base model), by the site's evaluator.
   *  Only these aggregates leave the site. */
  async evaluate(adapter: AdapterWeights | null, lora: LoraConfig): Promise<SiteMetric[]> {
    return (await this.evaluateWithOutcomes(adapter, lora)).metrics;
  }

  /** evaluate(), with the per-item multiple-choice outcomes a paired comparison needs (kept here). */
  async evaluateWithOutcomes(adapter: AdapterWeights | null, lora: LoraConfig): Promise<{ metrics: SiteMetric[]; outcomes: ItemOutcomes | null }> {
    if (!this.data) await this.trainingData();
    // quantized weights are cached per checkpoint manifest: the checkpoint read without hashing gets it now
    const c = this.checkpoint();
    if (!c.manifestSha256) this.ckpt = { ...c, manifestSha256: await this.modelManifestSha256() };
    const plan = planEvaluation(this.data!.eval, this.cfg.evaluation, this.log);
    const scores = await this.evaluator.score({ plan, adapter, lora });
    return { metrics: siteMetrics(plan, scores, this.evaluator.kind, figureOptionsOf(this.cfg.evaluation)), outcomes: choiceOutcomes(plan, scores, '') };
  }

  /** The site's own copy of an exam (site.yaml evaluation.exams; a relative path is under the site dir), or null. */
  examFile(name: string): string | null {
    const p = Object.hasOwn(this.cfg.evaluation.exams, name) ? this.cfg.evaluation.exams[name] : undefined;
    return p === undefined ? null : resolve(this.siteDir, p);
  }

  /** Multiple-choice figures of an adapter on each consortium-wide set (evaluation.shared_sets),
   *  by the site's evaluator; a set smaller than evaluation.min_items is withheld (nothing reported). */
  async evaluateShared(adapter: AdapterWeights | null, lora: LoraConfig): Promise<{ evalSet: string; metrics: SiteMetric[]; outcomes: ItemOutcomes | null }[]> {
    if (!this.data) await this.trainingData();
    const out: { evalSet: string; metrics: SiteMetric[]; outcomes: ItemOutcomes | null }[] = [];
    for (const set of this.data!.shared) {
      if (set.choices.length < this.cfg.evaluation.min_items) continue;
      const plan = { heldOut: [], choices: set.choices, generate: [], heldOutItems: 0 };
      const scores = await this.evaluator.score({ plan, adapter, lora });
      const metrics = siteMetrics(plan, scores, this.evaluator.kind, figureOptionsOf(this.cfg.evaluation)).filter((m) => m.name !== 'heldout_items');
      out.push({ evalSet: set.evalSet, metrics, outcomes: choiceOutcomes(plan, scores, set.evalSet) });
    }
    return out;
  }

  /** The local-only adapter's per-item outcomes of a round (kept at the site, never sent): the
   *  global version of that round is compared with them on the same items. Only the newest round is kept. */
  saveLocalOutcomes(jobId: string, round: number, sets: ItemOutcomes[]): void {
    const dir = join(this.siteDir, 'local-baseline', safe(jobId));
    mkdirSync(dir, { recursive: true });
    const file = join(dir, 'item-outcomes.json');
    writeFileSync(file + '.tmp', JSON.stringify({ round, sets }));
    renameSync(file + '.tmp', file);
  }

  /** The local-only outcomes of `round` (none when that round's were not kept). */
  localOutcomes(jobId: string, round: number): ItemOutcomes[] {
    const file = join(this.siteDir, 'local-baseline', safe(jobId), 'item-outcomes.json');
    if (!existsSync(file)) return [];
    const kept = JSON.parse(readFileSync(file, 'utf8')) as { round: number; sets: ItemOutcomes[] };
    return kept.round === round ? kept.sets : [];
  }

  loadLocalBaseline(jobId: string): AdapterWeights | null {
    const dir = join(this.siteDir, 'local-baseline', safe(jobId));
    return existsSync(join(dir, 'adapter_model.safetensors')) ? readPeftAdapter(dir).weights : null;
  }

  saveLocalBaseline(jobId: string, w: AdapterWeights, lora: LoraConfig, baseModel: string): void {
    const dir = join(this.siteDir, 'local-baseline', safe(jobId));
    writePeftAdapter(dir, w, { r: lora.r, alpha: lora.alpha, targets: lora.targets, dropout: lora.dropout, useRslora: lora.useRslora, baseModel });
  }

  /** The personalised adapter of a global version (personal.ts): kept here, never sent. */
  savePersonal(jobId: string, version: number, w: AdapterWeights, lora: LoraConfig, baseModel: string): void {
    const dir = join(this.siteDir, 'personal', safe(jobId), `v${version}`);
    writePeftAdapter(dir, w, { r: lora.r, alpha: lora.alpha, targets: lora.targets, dropout: lora.dropout, useRslora: lora.useRslora, baseModel });
  }

  /** The job's version-0 adapter (PEFT init from the shared seed): where the local baseline starts. */
  initialAdapter(lora: LoraConfig): AdapterWeights {
    return initLoraAdapter(this.checkpoint().config, lora);
  }
}

/** The first `max` items, half earlier and half new cases where both are there (so that a
 *  period's held-out set keeps the earlier test cases beside the new ones), in their order. */
function balancedByAge<T extends { data?: string }>(items: T[], max: number): T[] {
  if (items.length <= max || !items.some((x) => x.data === 'earlier')) return items.slice(0, max);
  const earlier = items.filter((x) => x.data === 'earlier'), fresh = items.filter((x) => x.data !== 'earlier');
  const nEarlier = Math.min(earlier.length, Math.max(max - fresh.length, Math.ceil(max / 2)));
  const keep = new Set([...earlier.slice(0, nEarlier), ...fresh.slice(0, max - nEarlier)]);
  return items.filter((x) => keep.has(x));
}

function safe(s: string): string {
  return s.replace(/[^A-Za-z0-9._-]/g, '_');
}
