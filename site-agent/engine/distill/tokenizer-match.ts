// Teacher and student must share a tokenizer: distillation compares their next-token distributions
// id by id. The identity of a tokenizer is a hash of what maps text to ids in its tokenizer.json
// (model with vocabulary and merges, added tokens, normalizer, pre-tokenizer), parsed and
// re-serialised so formatting differences do not count.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fail } from '../../../shared/errors.ts';
import { sha256Hex } from '../../../shared/hash.ts';
import { canonicalJson } from '../../../shared/audit.ts';

export function tokenizerIdentity(modelDir: string): string {
  const file = join(modelDir, 'tokenizer.json');
  if (!existsSync(file)) throw fail('FEDLORA_ERR_TOKENIZER', `${file}: missing (distillation needs each model's tokenizer.json to compare them)`);
  let tj: Record<string, unknown>;
  try {
    tj = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw fail('FEDLORA_ERR_TOKENIZER', `${file}: cannot parse (${(e as Error).message})`);
  }
  return sha256Hex(canonicalJson({ model: tj.model, added_tokens: tj.added_tokens, normalizer: tj.normalizer, pre_tokenizer: tj.pre_tokenizer }));
}

/** Throws FEDLORA_ERR_TOKENIZER_MISMATCH naming both models when their tokenizers differ. */
export function requireSameTokenizer(teacherDir: string, studentDir: string): string {
  const t = tokenizerIdentity(teacherDir), s = tokenizerIdentity(studentDir);
  if (t !== s) {
    throw fail('FEDLORA_ERR_TOKENIZER_MISMATCH', `teacher ${teacherDir} (tokenizer ${t.slice(0, 12)}) and student ${studentDir} (tokenizer ${s.slice(0, 12)}) do not share a tokenizer: distillation compares their next-token distributions token id by token id; pick a student of the teacher's family`);
  }
  return t;
}
