// Everything the agent keeps at the site between tasks: the base model (checked against the
// job's manifest), verified global adapters, the training/held-out data built from the site
// store, and the local-only baseline adapter. Nothing in here is ever sent as is.

import { mkdirSync, existsSync, writeFileSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type Database from 'better-sqlite3';
import type { SiteConfig } from '../config.ts';
import type { AdapterWeights, Checkpoint, Example, LoraConfig } from '../engine/types.ts';
import type { AgentLogger } from './agent.ts';
import type { FederationWire } from './wire.ts';
import { readPeftAdapter, writePeftAdapter } from '../../shared/peft.ts';
import { readCheckpoint, computeModelManifestAsync } from '../engine/checkpoint/index.ts';
import { loadTokenizer, type Tokenizer } from '../engine/tokenizer.ts';
import { chatToExample } from '../engine/data/examples.ts';
import { evaluateLoss, scoreChoices } from '../engine/train/eval.ts';
import { generate } from '../engine/infer.ts';
import { initLoraAdapter } from '../engine/train/lora-init.ts';
import { openSiteDataStore, buildDatasets, type BuiltDatasets } from '../data/index.ts';
import type { ChoiceItem } from '../data/types.ts';
import { fail } from '../../shared/errors.ts';

export interface SiteMetric {
  name: string;
  value: number;
  count: number;
}

export class SiteWorkspace {
  private manifest: Promise<string> | null = null;
  private ckpt: Checkpoint | null = null;
  private tok: Tokenizer | null = null;
  private data: { trainFile: string; heldOut: Example[]; choices: { item: ChoiceItem; prompt: number[]; options: number[][] }[]; ds: BuiltDatasets } | null = null;

  constructor(private readonly siteDir: string, private readonly cfg: SiteConfig, private readonly db: Database.Database, private readonly log: AgentLogger) {}

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

  /** Download (or reuse) a published global version; the wire verifies hash and signature. */
  async fetchGlobal(wire: FederationWire, jobId: string, version: number, sha256: string): Promise<AdapterWeights> {
    const dir = join(this.siteDir, 'adapters', safe(jobId), `v${version}`);
    const ok = join(dir, '.verified');
    if (!existsSync(ok)) {
      rmSync(dir, { recursive: true, force: true });
      const got = await wire.fetchAdapter({ jobId, version }, dir);
      const m = JSON.parse(got.manifestJson.toString('utf8')) as { adapter_sha256: string };
      if (sha256 && m.adapter_sha256 !== sha256) throw fail('FEDLORA_ERR_UPDATE_HASH', `global adapter ${jobId} v${version}: task names sha256 ${sha256}, the signed manifest ${m.adapter_sha256}`);
      writeFileSync(ok, new Date().toISOString());
    }
    const { weights } = readPeftAdapter(dir);
    return weights;
  }

  /** Build the training file and the held-out sets from the site store (de-identified records). */
  async trainingData(): Promise<{ trainFile: string; numTrain: number }> {
    const store = openSiteDataStore(this.db);
    const dataCfg = this.cfg.data;
    const ds = buildDatasets(store, {
      config: dataCfg,
      allowedFields: this.cfg.policy.allowed_fields,
      maxTrainExamples: this.cfg.training.max_train_examples ?? undefined,
    });
    if (ds.train.length === 0) throw fail('FEDLORA_ERR_DATASET', `site store ${join(this.siteDir, 'site.sqlite')} has no training examples; run "fedlora site ingest" first`);
    const dir = join(this.siteDir, 'datasets');
    mkdirSync(dir, { recursive: true });
    const trainFile = join(dir, 'train.jsonl');
    writeFileSync(trainFile + '.tmp', ds.train.map((e) => JSON.stringify(e)).join('\n') + '\n');
    renameSync(trainFile + '.tmp', trainFile);
    const tok = this.tokenizer();
    const maxItems = this.cfg.evaluation.max_items;
    const maxLen = this.cfg.training.max_seq_len;
    const allHeldOut = ds.validation.slice(0, maxItems).map((e) => chatToExample(e.messages, tok));
    const heldOut = allHeldOut.filter((e) => e.inputIds.length <= maxLen);
    if (heldOut.length < allHeldOut.length) {
      this.log.warn({ dropped: allHeldOut.length - heldOut.length, max_seq_len: maxLen }, 'held-out examples longer than training.max_seq_len are not evaluated');
    }
    const choices = ds.choices.slice(0, maxItems).map((item) => ({
      item,
      prompt: tok.encode(tok.applyChatTemplate(item.prompt, { addGenerationPrompt: true }), { addSpecialTokens: false }),
      options: item.options.map((o) => tok.encode(o, { addSpecialTokens: false })),
    }));
    this.data = { trainFile, heldOut, choices, ds };
    return { trainFile, numTrain: ds.train.length };
  }

  /** Held-out metrics of an adapter (null = the base model). Only these aggregates leave the site. */
  async evaluate(adapter: AdapterWeights | null, lora: LoraConfig): Promise<SiteMetric[]> {
    if (!this.data) await this.trainingData();
    const { heldOut, choices } = this.data!;
    const ckpt = this.checkpoint();
    const opts = { device: this.cfg.model.device };
    const out: SiteMetric[] = [];
    const minItems = this.cfg.evaluation.min_items;
    if (heldOut.length >= minItems) {
      const t0 = performance.now();
      const r = await evaluateLoss(ckpt, adapter, adapter ? lora : null, heldOut, opts);
      const ms = performance.now() - t0;
      out.push({ name: 'loss', value: r.loss, count: r.tokens }, { name: 'perplexity', value: Math.exp(r.loss), count: r.tokens });
      out.push({ name: 'tokens_per_s', value: r.tokens / (ms / 1000), count: r.tokens });
    } else {
      this.log.warn({ items: heldOut.length, min: minItems }, 'held-out set below evaluation.min_items: loss withheld');
    }
    if (choices.length >= minItems) {
      let correct = 0;
      const t0 = performance.now();
      const labels = [...new Set(choices.map((c) => c.item.label))];
      const tp = new Map<string, number>(), fp = new Map<string, number>(), fn = new Map<string, number>();
      for (const c of choices) {
        const s = await scoreChoices(ckpt, adapter, adapter ? lora : null, c.prompt, c.options, { ...opts, normalize: true });
        const gold = c.item.label;
        const pred = c.item.options[s.best];
        if (s.best === c.item.answer) {
          correct++;
          tp.set(gold, (tp.get(gold) ?? 0) + 1);
        } else {
          fn.set(gold, (fn.get(gold) ?? 0) + 1);
          fp.set(pred, (fp.get(pred) ?? 0) + 1);
        }
      }
      const ms = performance.now() - t0;
      const f1s = labels.map((l) => {
        const p = tp.get(l) ?? 0;
        const denom = 2 * p + (fp.get(l) ?? 0) + (fn.get(l) ?? 0);
        return denom === 0 ? 0 : (2 * p) / denom;
      });
      out.push(
        { name: 'accuracy', value: correct / choices.length, count: choices.length },
        { name: 'macro_f1', value: f1s.reduce((a, b) => a + b, 0) / Math.max(1, f1s.length), count: choices.length },
        { name: 'latency_ms', value: ms / choices.length, count: choices.length },
      );
    }
    // Exact match of the generated diagnosis (greedy, with the KV cache) on a few items.
    const gen = choices.slice(0, this.cfg.evaluation.generate_items);
    if (gen.length >= Math.min(minItems, this.cfg.evaluation.generate_items) && gen.length > 0) {
      const tok = this.tokenizer();
      let hits = 0;
      let newTokens = 0;
      const t0 = performance.now();
      for (const c of gen) {
        const maxNew = Math.max(...c.options.map((o) => o.length)) + 16;
        const ids = await generate(ckpt, adapter, adapter ? lora : null, c.prompt, { maxNewTokens: maxNew, device: this.cfg.model.device });
        newTokens += ids.length;
        if (normalizeDiagnosis(tok.decode(ids, { skipSpecialTokens: true })) === normalizeDiagnosis(c.item.label)) hits++;
      }
      const s = (performance.now() - t0) / 1000;
      out.push(
        { name: 'exact_match', value: hits / gen.length, count: gen.length },
        { name: 'generation_tokens_per_s', value: newTokens / Math.max(s, 1e-9), count: newTokens },
      );
    }
    out.push({ name: 'heldout_items', value: heldOut.length, count: heldOut.length });
    return out;
  }

  loadLocalBaseline(jobId: string): AdapterWeights | null {
    const dir = join(this.siteDir, 'local-baseline', safe(jobId));
    return existsSync(join(dir, 'adapter_model.safetensors')) ? readPeftAdapter(dir).weights : null;
  }

  saveLocalBaseline(jobId: string, w: AdapterWeights, lora: LoraConfig, baseModel: string): void {
    const dir = join(this.siteDir, 'local-baseline', safe(jobId));
    writePeftAdapter(dir, w, { r: lora.r, alpha: lora.alpha, targets: lora.targets, dropout: lora.dropout, useRslora: lora.useRslora, baseModel });
  }

  /** The job's version-0 adapter (PEFT init from the shared seed): where the local baseline starts. */
  initialAdapterLike(_global: AdapterWeights, lora: LoraConfig): AdapterWeights {
    return initLoraAdapter(this.checkpoint().config, lora);
  }
}

/** The first line of a generated answer, without a "Diagnosis:"/"诊断：" label, case,
 *  punctuation or spaces — what two equal diagnoses share however they are written. */
export function normalizeDiagnosis(text: string): string {
  const first = text.normalize('NFKC').split('\n').map((l) => l.trim()).find((l) => l.length > 0) ?? '';
  return first
    .replace(/^(diagnosis|诊断)\s*[:：]\s*/i, '')
    .toLowerCase()
    .replace(/[\s\p{P}]+/gu, '');
}

function safe(s: string): string {
  return s.replace(/[^A-Za-z0-9._-]/g, '_');
}
