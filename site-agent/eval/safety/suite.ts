// The safety red-team suite: 216 synthetic prompts (prompts.jsonl, written for this project, in
// Chinese and English) across six categories, each answered as the assistant would serve it
// (same instructions, disclaimer, reasoning split; greedy decoding; a planted document for the
// prompt-injection category) and judged by its category's rule (judges.ts). Pass rate per
// category and overall with 95% Wilson intervals; stored per adapter (version + sha256) in the
// site database, where the release gate reads it.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type Database from 'better-sqlite3-multiple-ciphers';
import { fail } from '../../../shared/errors.ts';
import { generateAnswer } from '../../serve/answer.ts';
import type { GenerationBackend } from '../../serve/backend/types.ts';
import type { ServeConfig } from '../../serve/config.ts';
import { BASE_VERSION } from '../../serve/gate/serving.ts';
import { RequestQueue } from '../../serve/queue.ts';
import { CATEGORIES, judge, type Category, type SafetyPrompt } from './judges.ts';
import { wilson } from './stats.ts';

const PROMPTS_FILE = join(import.meta.dirname, 'prompts.jsonl');

export interface RateWithInterval {
  prompts: number;
  passed: number;
  pass_rate: number;
  ci95: [number, number];
}

export interface SafetyReport extends RateWithInterval {
  suite_sha256: string;
  adapter: { label: string; sha256: string | null };
  categories: Record<Category, RateWithInterval>;
  results: { id: string; category: Category; lang: string; passed: boolean; reasons: string[]; answer_sha256: string }[];
  started_at: string;
  finished_at: string;
}

export function loadSafetyPrompts(file = PROMPTS_FILE): { prompts: SafetyPrompt[]; sha256: string } {
  const text = readFileSync(file, 'utf8');
  const prompts = text.split('\n').flatMap((line, i) => {
    if (!line.trim()) return [];
    try {
      const p = JSON.parse(line) as SafetyPrompt;
      if (!CATEGORIES.includes(p.category) || typeof p.prompt !== 'string') throw new Error('needs a known category and a prompt');
      return [p];
    } catch (e) {
      throw fail('FEDLORA_ERR_DATA_LINE', `${file}:${i + 1}: ${(e as Error).message}`);
    }
  });
  return { prompts, sha256: createHash('sha256').update(text).digest('hex') };
}

const rate = (passed: number, n: number): RateWithInterval => ({ prompts: n, passed, pass_rate: n ? passed / n : 0, ci95: wilson(passed, n) });

export async function runSafetySuite(o: {
  backend: GenerationBackend;
  config: ServeConfig;
  adapter: { label: string; sha256: string | null };
  maxNewTokens: number;
  prompts?: SafetyPrompt[];
  signal?: AbortSignal;
  onProgress?: (done: number, total: number) => void;
}): Promise<SafetyReport> {
  const loaded = loadSafetyPrompts();
  const prompts = o.prompts ?? loaded.prompts;
  const started = new Date().toISOString();
  const deps = {
    config: { ...o.config, max_tokens_limit: Math.max(o.config.max_tokens_limit, o.maxNewTokens) },
    backend: o.backend,
    queue: new RequestQueue(1, prompts.length),
    retrieve: () => [],
    serving: async () => ({ ...BASE_VERSION, label: o.adapter.label, sha256: o.adapter.sha256 }),
  };
  const results: SafetyReport['results'] = [];
  for (const [i, p] of prompts.entries()) {
    const passages = p.injected_document ? [{ id: -1, docName: p.injected_document.source, heading: null, text: p.injected_document.text, score: 1 }] : [];
    const a = await generateAnswer(deps, {
      kind: 'chat', messages: [{ role: 'user', content: p.prompt }], passages, maxTokens: o.maxNewTokens, temperature: 0, signal: o.signal ?? new AbortController().signal,
    });
    if (a.finish === 'cancelled') throw fail('FEDLORA_ERR_TRAINING', 'safety suite cancelled');
    const v = judge(p, a.content, a.disclaimer);
    results.push({ id: p.id, category: p.category, lang: p.lang, passed: v.passed, reasons: v.reasons, answer_sha256: createHash('sha256').update(a.content).digest('hex') });
    o.onProgress?.(i + 1, prompts.length);
  }
  const categories = Object.fromEntries(CATEGORIES.map((c) => {
    const rs = results.filter((r) => r.category === c);
    return [c, rate(rs.filter((r) => r.passed).length, rs.length)];
  })) as Record<Category, RateWithInterval>;
  return {
    ...rate(results.filter((r) => r.passed).length, results.length),
    suite_sha256: o.prompts ? createHash('sha256').update(JSON.stringify(prompts)).digest('hex') : loaded.sha256,
    adapter: o.adapter, categories, results, started_at: started, finished_at: new Date().toISOString(),
  };
}

export function storeSafetyRun(db: Database.Database, r: SafetyReport, adapter: { jobId: string | null; version: number | null }): number {
  return db.transaction(() => {
    const id = Number(db.prepare(`INSERT INTO safety_runs (adapter_label, adapter_sha256, job_id, version, suite_sha256, prompts, passed, pass_rate, ci_low, ci_high, categories, started_at, finished_at)
        VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)`).run(r.adapter.label, r.adapter.sha256, adapter.jobId, adapter.version, r.suite_sha256, r.prompts, r.passed, r.pass_rate, r.ci95[0], r.ci95[1], JSON.stringify(r.categories), r.started_at, r.finished_at).lastInsertRowid);
    const ins = db.prepare('INSERT INTO safety_results (run_id, prompt_id, category, lang, passed, reasons, answer_sha256) VALUES (?,?,?,?,?,?,?)');
    for (const x of r.results) ins.run(id, x.id, x.category, x.lang, x.passed ? 1 : 0, JSON.stringify(x.reasons), x.answer_sha256);
    return id;
  }).immediate();
}

/** The newest safety run of an adapter (by its sha256), or null. */
export function latestSafetyRun(db: Database.Database, sha256: string): { id: number; pass_rate: number; ci_low: number; ci_high: number; prompts: number; categories: Record<Category, RateWithInterval>; finished_at: string } | null {
  const r = db.prepare('SELECT id, pass_rate, ci_low, ci_high, prompts, categories, finished_at FROM safety_runs WHERE adapter_sha256 = ? ORDER BY id DESC LIMIT 1').get(sha256) as
    | { id: number; pass_rate: number; ci_low: number; ci_high: number; prompts: number; categories: string; finished_at: string }
    | undefined;
  return r ? { ...r, categories: JSON.parse(r.categories) } : null;
}
