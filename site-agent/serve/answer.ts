// One answer of the assistant, whichever door it came through (chat page, /v1/chat/completions,
// /v1/completions, the safety suite): retrieve guideline passages, build the prompt, wait for a
// slot in the queue, generate on the serving adapter version, split DeepSeek-R1 reasoning from
// the answer, append the site's disclaimer, then store the answer and its audit entry (in one
// transaction) before the caller sends the end of the response.
import { randomUUID } from 'node:crypto';
import type Database from 'better-sqlite3-multiple-ciphers';
import type { AuditLog } from '../../shared/audit.ts';
import { fail, isFedloraError } from '../../shared/errors.ts';
import type { ChatMessage } from '../engine/index.ts';
import type { GenerationBackend } from './backend/types.ts';
import type { ServeConfig } from './config.ts';
import { DISCLAIMER_SEPARATOR, disclaimerFor } from './disclaimer.ts';
import type { ServingVersion } from './gate/serving.ts';
import { buildMessages, citationsOf, lastUserText, type Citation, type Passage } from './prompt.ts';
import type { RequestQueue } from './queue.ts';
import { ThinkSplitter } from './think.ts';
import { sha256Hex } from '../../shared/hash.ts';
import type { ServeMetrics } from './metrics.ts';

/** What generating an answer needs (the safety suite uses this alone, storing nothing). */
export interface GenerateDeps {
  config: ServeConfig;
  backend: GenerationBackend;
  queue: RequestQueue;
  metrics?: ServeMetrics;
  /** Top passages of the site's knowledge base for a question. */
  retrieve: (question: string, k: number) => Passage[];
  /** The version to answer with; switches the backend when the gate decided another one. */
  serving: () => Promise<ServingVersion>;
}

export interface AssistantDeps extends GenerateDeps {
  db: Database.Database;
  audit: AuditLog;
  metrics: ServeMetrics;
  /** The site's de-identifier (what is stored of a question, per serve.audit.store_prompt). */
  deidentify: (text: string) => string;
}

export interface AnswerRequest {
  kind: 'chat' | 'completion';
  /** chat: the conversation; completion: a raw prompt in `prompt`. */
  messages?: ChatMessage[];
  prompt?: string;
  maxTokens?: number;
  temperature?: number;
  topP?: number;
  seed?: number;
  stop?: string[];
  /** Passages to use instead of retrieval (the safety suite's injected documents). */
  passages?: Passage[];
  user: string;
  endpoint: string;
  signal: AbortSignal;
}

export interface AnswerMeta {
  id: string;
  created: number;
  modelVersion: string;
  adapterSha256: string | null;
  citations: Citation[];
  disclaimer: string;
}

export interface AnswerEvents {
  onStart?(meta: AnswerMeta): void;
  onReasoning?(delta: string): void;
  onContent?(delta: string): void;
}

export interface Answer extends AnswerMeta {
  /** The answer followed by DISCLAIMER_SEPARATOR and the disclaimer. */
  content: string;
  reasoning: string;
  promptTokens: number;
  completionTokens: number;
  finish: 'stop' | 'length' | 'cancelled';
  latencyMs: number;
  ttftMs: number | null;
}

/** Answer a clinician's request: generate, then store the answer and its audit entry. */
export async function answer(d: AssistantDeps, req: AnswerRequest, ev: AnswerEvents = {}): Promise<Answer> {
  const question = questionOf(req);
  const promptSha = sha256Hex(req.kind === 'chat' ? JSON.stringify(req.messages) : question);
  try {
    const a = await generateAnswer(d, req, ev);
    storeAnswer(d, req, question, promptSha, a);
    return a;
  } catch (e) {
    if (isFedloraError(e) && e.code !== 'FEDLORA_ERR_INTERNAL') {
      d.metrics.refused(e.code);
      d.audit.append(req.user, 'assistant_refused', req.endpoint, { endpoint: req.endpoint, code: e.code, reason: e.message, prompt_sha256: promptSha });
    }
    throw e;
  }
}

const questionOf = (req: Pick<AnswerRequest, 'kind' | 'messages' | 'prompt'>) => (req.kind === 'chat' ? lastUserText(req.messages ?? []) : req.prompt ?? '');

/** Generate one answer as it would be served (retrieval, prompt, queue, reasoning split,
 *  disclaimer); nothing is stored. */
export async function generateAnswer(d: GenerateDeps, req: Omit<AnswerRequest, 'user' | 'endpoint'>, ev: AnswerEvents = {}): Promise<Answer> {
  const t0 = performance.now();
  const question = questionOf(req);
  const cfg = d.config;
  const maxTokens = req.maxTokens ?? cfg.max_tokens_default;
  if (maxTokens > cfg.max_tokens_limit) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `max_tokens ${maxTokens} is over this server's limit of ${cfg.max_tokens_limit} (serve.max_tokens_limit)`);
  if (req.kind === 'chat' && !question.trim()) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', 'messages: there is no user message with content to answer');

  let passages = req.kind === 'chat' ? req.passages ?? (cfg.retrieval.enabled ? d.retrieve(question, cfg.retrieval.top_k) : []) : [];
  passages = passages.map((p) => ({ ...p, text: p.text.slice(0, cfg.retrieval.max_passage_chars) }));
  // Fit the prompt: passages go first when the whole does not fit; the question itself never is cut.
  let prompt = promptFor(d, req, passages);
  while (prompt.ids.length > cfg.max_prompt_tokens && passages.length > 0) {
    passages = passages.slice(0, -1);
    prompt = promptFor(d, req, passages);
  }
  if (prompt.ids.length > cfg.max_prompt_tokens) {
    throw fail('FEDLORA_ERR_PROMPT_TOO_LONG', `the prompt is ${prompt.ids.length} tokens; this server accepts at most ${cfg.max_prompt_tokens} (serve.max_prompt_tokens)`, { prompt_tokens: prompt.ids.length, limit: cfg.max_prompt_tokens });
  }

  const release = await d.queue.acquire(req.signal);
  try {
    const version = await d.serving();
    const citations = citationsOf(passages);
    const disclaimer = disclaimerFor(cfg.disclaimer, question);
    const meta: AnswerMeta = { id: `chatcmpl-${randomUUID()}`, created: Math.floor(Date.now() / 1000), modelVersion: version.label, adapterSha256: version.sha256, citations, disclaimer };
    ev.onStart?.(meta);
    const split = new ThinkSplitter(req.kind === 'chat' && /<think>\s*$/.test(prompt.text));
    let reasoning = '';
    let content = '';
    let ttftMs: number | null = null;
    const tGen = performance.now();
    const take = (piece: { reasoning: string; content: string }) => {
      if (piece.reasoning) {
        reasoning += piece.reasoning;
        ev.onReasoning?.(piece.reasoning);
      }
      // Leading whitespace of the answer (after the reasoning) is not sent.
      const c = content ? piece.content : piece.content.replace(/^\s+/, '');
      if (c) {
        content += c;
        ev.onContent?.(c);
      }
    };
    const gen = await d.backend.generate(prompt.ids, {
      maxTokens, temperature: req.temperature ?? 0.6, topP: req.topP ?? 0.95, seed: req.seed, stop: req.stop ?? [], signal: req.signal,
      onText: (delta) => {
        ttftMs ??= performance.now() - tGen;
        take(split.push(delta));
      },
    });
    take(split.end());
    const decodeS = (performance.now() - tGen - (ttftMs ?? 0)) / 1000;
    const suffix = `${DISCLAIMER_SEPARATOR}${disclaimer}`;
    if (gen.finish !== 'cancelled') ev.onContent?.(content ? suffix : suffix.replace(/^\s+/, ''));
    const full = content ? content.trimEnd() + suffix : disclaimer;
    const latencyMs = performance.now() - t0;
    const result: Answer = { ...meta, content: full, reasoning: reasoning.trim(), promptTokens: prompt.ids.length, completionTokens: gen.completionTokens, finish: gen.finish, latencyMs, ttftMs };
    d.metrics?.answered({ ttftMs, decodeTokens: Math.max(0, gen.completionTokens - 1), decodeS, finish: gen.finish });
    return result;
  } finally {
    release();
  }
}

function promptFor(d: GenerateDeps, req: Omit<AnswerRequest, 'user' | 'endpoint'>, passages: Passage[]): { text: string; ids: number[] } {
  if (req.kind === 'completion') {
    const text = req.prompt ?? '';
    return { text, ids: d.backend.encode(text) };
  }
  return d.backend.chatPrompt(buildMessages(req.messages ?? [], passages, d.config.system_prompt));
}

/** The answer row and its audit entry, in one transaction (before the response ends). */
function storeAnswer(d: AssistantDeps, req: AnswerRequest, question: string, promptSha: string, a: Answer): void {
  const questionDeid = d.config.audit.store_prompt === 'deidentified' ? d.deidentify(question) : null;
  const answerSha = sha256Hex(a.content);
  const cites = a.citations.map((c) => ({ n: c.n, passage_id: c.passageId, source: c.source, heading: c.heading }));
  d.db.transaction(() => {
    d.db.prepare(`INSERT INTO serve_answers (id, user_name, created_at, endpoint, model_version, adapter_sha256, prompt_sha256, question_deid,
        answer_text, answer_sha256, citations, finish_reason, latency_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)`)
      .run(a.id, req.user, new Date(a.created * 1000).toISOString(), req.endpoint, a.modelVersion, a.adapterSha256, promptSha, questionDeid,
        d.deidentify(a.content), answerSha, JSON.stringify(cites), a.finish, a.latencyMs);
    d.audit.append(req.user, 'assistant_query', a.id, {
      endpoint: req.endpoint,
      model_version: a.modelVersion,
      adapter_sha256: a.adapterSha256,
      prompt_sha256: promptSha,
      ...(questionDeid !== null ? { question_deid: questionDeid } : {}),
      citations: cites.map((c) => ({ n: c.n, passage_id: c.passage_id, source: c.source })),
      answer_sha256: answerSha,
      latency_ms: Math.round(a.latencyMs),
      ttft_ms: a.ttftMs === null ? null : Math.round(a.ttftMs),
      prompt_tokens: a.promptTokens,
      completion_tokens: a.completionTokens,
      finish: a.finish,
    });
  }).immediate();
}
