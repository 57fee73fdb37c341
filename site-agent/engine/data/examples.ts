// Records -> Examples (token ids + HF-style unshifted labels, -100 = no loss).
//
// Chat records are rendered with the model's own chat template and only assistant turns carry
// loss. How the assistant spans are found (templates have no generation markers in general):
//   for each assistant message i,
//     P_i = render(messages[0..i), add_generation_prompt = true)   -- ends with the assistant header
//     F_i = render(messages[0..i])                                   -- ends after the turn (+ eos)
//   and the full render R must start with P_i and F_i must start with P_i and R with F_i
//   (a "prefix-stable" template; DeepSeek's, Llama 3's and Qwen2's are). The characters
//   [len(P_i), len(F_i)) of R are the assistant's turn including its end-of-turn token. R is cut at
//   these character boundaries and each piece is tokenized on its own, so token boundaries coincide
//   with span boundaries exactly (with DeepSeek's template every boundary is a special token, so
//   the ids equal those of tokenizing R in one go).

import { fail } from '../../../shared/errors.ts';
import type { Example } from '../types.ts';
import type { ChatMessage, Tokenizer } from '../tokenizer.ts';

export const IGNORE_INDEX = -100;

/** A problem with one record; the loader adds file:line. */
export class RecordError extends Error {}

function renderOrThrow(tok: Tokenizer, msgs: ChatMessage[], gen: boolean): string {
  try {
    return tok.applyChatTemplate(msgs, { addGenerationPrompt: gen });
  } catch (e) {
    throw new RecordError(`chat template failed: ${(e as Error).message}`);
  }
}

function validateMessages(v: unknown): ChatMessage[] {
  if (!Array.isArray(v) || v.length === 0) throw new RecordError('"messages" must be a non-empty array');
  return v.map((m, i) => {
    if (!m || typeof m !== 'object') throw new RecordError(`messages[${i}] is not an object`);
    const { role, content } = m as Record<string, unknown>;
    if (role !== 'system' && role !== 'user' && role !== 'assistant') throw new RecordError(`messages[${i}].role ${JSON.stringify(role)} is not system, user or assistant`);
    if (typeof content !== 'string') throw new RecordError(`messages[${i}].content must be a string`);
    return { role, content };
  });
}

/** Chat -> Example with loss only on assistant turns (method in the file comment). */
export function chatToExample(messages: ChatMessage[], tok: Tokenizer): Example {
  if (!tok.hasChatTemplate) throw fail('FEDLORA_ERR_TOKENIZER', 'the model has no chat_template; chat records cannot be rendered');
  const full = renderOrThrow(tok, messages, false);
  const spans: [number, number][] = [];
  for (let i = 0; i < messages.length; i++) {
    if (messages[i].role !== 'assistant') continue;
    const p = renderOrThrow(tok, messages.slice(0, i), true);
    const f = renderOrThrow(tok, messages.slice(0, i + 1), false);
    if (!f.startsWith(p) || !full.startsWith(f)) {
      throw new RecordError(`the chat template is not prefix-stable at messages[${i}] (rendering a prefix of the conversation does not give a prefix of the full text), so assistant tokens cannot be located`);
    }
    if (f.length > p.length) spans.push([p.length, f.length]);
  }
  if (spans.length === 0) throw new RecordError('no assistant message with content: nothing to learn from');
  const inputIds: number[] = [];
  const labels: number[] = [];
  let at = 0;
  const piece = (from: number, to: number, learn: boolean) => {
    if (to <= from) return;
    const ids = tok.encode(full.slice(from, to), { addSpecialTokens: false });
    for (const id of ids) {
      inputIds.push(id);
      labels.push(learn ? id : IGNORE_INDEX);
    }
  };
  for (const [s, e] of spans) {
    piece(at, s, false);
    piece(s, e, true);
    at = e;
  }
  piece(at, full.length, false);
  return { inputIds, labels };
}

/** Plain prompt/completion (no chat template, like TRL's non-conversational format):
 *  [bos] prompt completion [eos], loss on completion + eos. */
function promptCompletionToExample(prompt: string, completion: string, tok: Tokenizer): Example {
  const p = tok.encode(prompt, { addSpecialTokens: false });
  const c = tok.encode(completion, { addSpecialTokens: false });
  const bos = tok.bosId !== null ? [tok.bosId] : [];
  const eos = tok.eosIds.length ? [tok.eosIds[0]] : [];
  if (c.length === 0) throw new RecordError('"completion" is empty: nothing to learn from');
  const inputIds = [...bos, ...p, ...c, ...eos];
  const labels = [...bos.map(() => IGNORE_INDEX), ...p.map(() => IGNORE_INDEX), ...c, ...eos];
  return { inputIds, labels };
}

/** Pre-tokenized record; labels default to input_ids. Ids must be < vocabSize. */
function tokensToExample(inputIds: unknown, labels: unknown, vocabSize: number): Example {
  const ids = checkIds(inputIds, 'input_ids', vocabSize, false);
  if (ids.length === 0) throw new RecordError('"input_ids" is empty');
  const lab = labels === undefined || labels === null ? [...ids] : checkIds(labels, 'labels', vocabSize, true);
  if (lab.length !== ids.length) throw new RecordError(`"labels" has ${lab.length} entries but "input_ids" has ${ids.length}`);
  return { inputIds: ids, labels: lab };
}

function checkIds(v: unknown, field: string, vocab: number, allowIgnore: boolean): number[] {
  if (!Array.isArray(v)) throw new RecordError(`"${field}" must be an array of integers`);
  for (let i = 0; i < v.length; i++) {
    const x = v[i];
    if (!Number.isInteger(x) || (x < 0 && !(allowIgnore && x === IGNORE_INDEX)) || x >= vocab) {
      throw new RecordError(`"${field}"[${i}] = ${JSON.stringify(x)} is not a token id in [0, ${vocab})${allowIgnore ? ' or -100' : ''}`);
    }
  }
  return v as number[];
}

export type RecordFormat = 'auto' | 'chat' | 'prompt_completion' | 'tokens';

/** One parsed JSON record -> Example, by format (auto: by the keys present). */
export function recordToExample(rec: unknown, tok: Tokenizer, format: RecordFormat, vocabSize: number): Example {
  if (!rec || typeof rec !== 'object' || Array.isArray(rec)) throw new RecordError('record is not a JSON object');
  const r = rec as Record<string, unknown>;
  let f = format;
  if (f === 'auto') {
    if ('messages' in r) f = 'chat';
    else if ('prompt' in r || 'completion' in r) f = 'prompt_completion';
    else if ('input_ids' in r) f = 'tokens';
    else throw new RecordError('record has none of "messages", "prompt"/"completion" or "input_ids"');
  }
  if (f === 'chat') return chatToExample(validateMessages(r.messages), tok);
  if (f === 'prompt_completion') {
    if (typeof r.prompt !== 'string') throw new RecordError('"prompt" must be a string');
    if (typeof r.completion !== 'string') throw new RecordError('"completion" must be a string');
    return promptCompletionToExample(r.prompt, r.completion, tok);
  }
  return tokensToExample(r.input_ids, r.labels, vocabSize);
}
