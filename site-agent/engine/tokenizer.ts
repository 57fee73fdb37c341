// Tokenizer of a Hugging Face model folder: tokenizer.json (+ tokenizer_config.json) through
// @lenml/tokenizers (a port of transformers.js), and the chat template through @huggingface/jinja.
//
// Special-token semantics follow transformers' *fast* tokenizers:
// - LlamaTokenizerFast (DeepSeek, Llama) rebuilds its post-processor from add_bos_token /
//   add_eos_token (defaults true / false), so encode(text) = [bos] + ids (+ [eos]); the
//   post-processor in tokenizer.json (DeepSeek: plain ByteLevel) does not add them. @lenml does
//   not implement that, so we do it here.
// - Other classes (Qwen2TokenizerFast, PreTrainedTokenizerFast) use tokenizer.json's post-processor.
// - `legacy` only matters when converting a slow (sentencepiece) tokenizer; a fast tokenizer uses
//   tokenizer.json as-is, so we force legacy=true (else @lenml swaps in a Metaspace pre-tokenizer).

import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { TokenizerLoader } from '@lenml/tokenizers';
import { Template } from '@huggingface/jinja';
import { fail } from '../../shared/errors.ts';

export interface ChatMessage {
  role: string;
  content: string;
}

export interface Tokenizer {
  encode(text: string, opts?: { addSpecialTokens?: boolean }): number[];
  decode(ids: number[], opts?: { skipSpecialTokens?: boolean }): string;
  bosId: number | null;
  eosIds: number[];
  padId: number | null;
  /** Token id of an added/special token by its text, or null. */
  tokenId(content: string): number | null;
  /** Highest token id the tokenizer can produce (+1 = the vocab size it needs). */
  maxId: number;
  hasChatTemplate: boolean;
  applyChatTemplate(messages: ChatMessage[], opts?: { addGenerationPrompt?: boolean }): string;
}

const LLAMA_CLASSES = new Set(['LlamaTokenizer', 'LlamaTokenizerFast', 'CodeLlamaTokenizer', 'CodeLlamaTokenizerFast']);

function tokenText(v: unknown): string | null {
  if (v === null || v === undefined) return null;
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return null;
}

function readJson(path: string): Record<string, any> {
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw fail('FEDLORA_ERR_TOKENIZER', `${path}: cannot read or parse (${(e as Error).message})`);
  }
}

export function loadTokenizer(dir: string): Tokenizer {
  const tjPath = join(dir, 'tokenizer.json');
  const tcPath = join(dir, 'tokenizer_config.json');
  if (!existsSync(tjPath)) throw fail('FEDLORA_ERR_TOKENIZER', `${tjPath}: missing (only fast tokenizers, i.e. tokenizer.json, are supported)`);
  const tj = readJson(tjPath);
  const tc = existsSync(tcPath) ? readJson(tcPath) : {};
  if (!tj.model || typeof tj.model !== 'object') throw fail('FEDLORA_ERR_TOKENIZER', `${tjPath}: "model" is missing`);

  let tok: any;
  try {
    tok = TokenizerLoader.fromPreTrained({ tokenizerJSON: tj as any, tokenizerConfig: { ...tc, legacy: true } as any });
  } catch (e) {
    throw fail('FEDLORA_ERR_TOKENIZER', `${tjPath}: cannot build the tokenizer (${(e as Error).message})`);
  }

  const idOf = new Map<string, number>();
  for (const a of (tj.added_tokens ?? []) as { id: number; content: string }[]) idOf.set(a.content, a.id);
  const vocab = (tj.model.vocab ?? {}) as Record<string, number> | [string, number][];
  let maxId = -1;
  if (Array.isArray(vocab)) maxId = vocab.length - 1; // unigram: [piece, score][] indexed by id
  else for (const id of Object.values(vocab)) if (id > maxId) maxId = id;
  for (const id of idOf.values()) if (id > maxId) maxId = id;
  const tokenId = (content: string | null): number | null => {
    if (content === null) return null;
    if (idOf.has(content)) return idOf.get(content)!;
    const id = tok.model.tokens_to_ids.get(content);
    return id === undefined ? null : id;
  };

  const bosText = tokenText(tc.bos_token);
  const eosText = tokenText(tc.eos_token);
  const padText = tokenText(tc.pad_token) ?? eosText;
  const bosId = tokenId(bosText);
  const eosId = tokenId(eosText);
  const padId = tokenId(padText);
  for (const [k, t, id] of [['bos_token', bosText, bosId], ['eos_token', eosText, eosId], ['pad_token', padText, padId]] as const) {
    if (t !== null && id === null) throw fail('FEDLORA_ERR_TOKENIZER', `${tcPath}: ${k} ${JSON.stringify(t)} is not a token of ${tjPath}`);
  }
  const cls = typeof tc.tokenizer_class === 'string' ? tc.tokenizer_class : '';
  const llamaStyle = LLAMA_CLASSES.has(cls);
  const addBos = llamaStyle && (tc.add_bos_token ?? true) === true;
  const addEos = llamaStyle && tc.add_eos_token === true;

  let templateSrc: string | null = null;
  if (typeof tc.chat_template === 'string') templateSrc = tc.chat_template;
  else if (Array.isArray(tc.chat_template)) templateSrc = tc.chat_template.find((t: any) => t?.name === 'default')?.template ?? null;
  else if (existsSync(join(dir, 'chat_template.jinja'))) templateSrc = readFileSync(join(dir, 'chat_template.jinja'), 'utf8');
  let template: Template | null = null;
  if (templateSrc !== null) {
    try {
      template = new Template(templateSrc);
    } catch (e) {
      throw fail('FEDLORA_ERR_TOKENIZER', `${tcPath}: chat_template does not parse (${(e as Error).message})`);
    }
  }

  return {
    bosId,
    eosIds: eosId === null ? [] : [eosId],
    padId,
    maxId,
    hasChatTemplate: template !== null,
    tokenId: (c) => tokenId(c),
    encode(text, opts = {}) {
      const add = opts.addSpecialTokens ?? true;
      if (llamaStyle) {
        const ids: number[] = tok.encode(text, { add_special_tokens: false });
        if (!add) return ids;
        return [...(addBos && bosId !== null ? [bosId] : []), ...ids, ...(addEos && eosId !== null ? [eosId] : [])];
      }
      return tok.encode(text, { add_special_tokens: add });
    },
    decode(ids, opts = {}) {
      for (const id of ids) if (!Number.isInteger(id) || id < 0) throw fail('FEDLORA_ERR_TOKENIZER', `decode: ${JSON.stringify(id)} is not a token id`);
      // Ids past the tokenizer (padding rows of a rounded-up embedding) have no text.
      ids = ids.filter((id) => id <= maxId);
      if (ids.length === 0) return '';
      return tok.decode(ids, { skip_special_tokens: opts.skipSpecialTokens ?? false, clean_up_tokenization_spaces: tc.clean_up_tokenization_spaces ?? false });
    },
    applyChatTemplate(messages, opts = {}) {
      if (!template) throw fail('FEDLORA_ERR_TOKENIZER', `${tcPath}: the tokenizer has no chat_template`);
      try {
        return template.render({
          messages,
          add_generation_prompt: opts.addGenerationPrompt ?? false,
          bos_token: bosText ?? '',
          eos_token: eosText ?? '',
          pad_token: padText ?? '',
          unk_token: tokenText(tc.unk_token) ?? '',
          // raise_exception(msg) is built into @huggingface/jinja (throws an Error with msg).
        });
      } catch (e) {
        throw fail('FEDLORA_ERR_TOKENIZER', `${tcPath}: chat_template failed to render (${(e as Error).message})`);
      }
    },
  };
}
