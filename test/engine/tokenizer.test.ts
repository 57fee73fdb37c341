import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync, readFileSync, writeFileSync, mkdirSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadTokenizer, type Tokenizer } from '../../site-agent/engine/tokenizer.ts';
import { deepseekTokenizerPaths, writeTinyModel } from '../../site-agent/engine/checkpoint/index.ts';
import { FedloraError } from '../../shared/errors.ts';

let root: string;
let ds: Tokenizer;
let dsJson: any;
let dsDir: string;
beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'fedlora-tok-'));
  dsDir = join(root, 'ds');
  mkdirSync(dsDir);
  const p = deepseekTokenizerPaths();
  copyFileSync(p.tokenizerJson, join(dsDir, 'tokenizer.json'));
  copyFileSync(p.tokenizerConfig, join(dsDir, 'tokenizer_config.json'));
  dsJson = JSON.parse(readFileSync(p.tokenizerJson, 'utf8'));
  ds = loadTokenizer(dsDir);
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** GPT-2's byte -> unicode table, written out here independently of the product code. */
function gpt2ByteAlphabet(): Map<string, number> {
  const printable = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  const m = new Map<string, number>();
  let n = 0;
  for (let b = 0; b < 256; b++) m.set(String.fromCodePoint(printable(b) ? b : 256 + n++), b);
  return m;
}

/** Independent check: the ids' vocabulary strings, mapped back through GPT-2's byte alphabet, are the text's UTF-8 bytes. */
function bytesOf(ids: number[], json: any): Buffer {
  const byId = new Map<number, string>();
  for (const [s, id] of Object.entries(json.model.vocab as Record<string, number>)) byId.set(id, s);
  const u2b = gpt2ByteAlphabet();
  const out: number[] = [];
  for (const id of ids) for (const ch of byId.get(id)!) out.push(u2b.get(ch)!);
  return Buffer.from(out);
}

describe('DeepSeek-V3 tokenizer (real tokenizer.json)', () => {
  it('special tokens map to the ids in tokenizer.json added_tokens', () => {
    const added = new Map<string, number>(dsJson.added_tokens.map((a: any) => [a.content, a.id]));
    expect(ds.bosId).toBe(added.get('<｜begin▁of▁sentence｜>'));
    expect(ds.eosIds).toEqual([added.get('<｜end▁of▁sentence｜>')]);
    expect(ds.padId).toBe(added.get('<｜end▁of▁sentence｜>')); // tokenizer_config: pad_token = eos
    const user = added.get('<｜User｜>')!, asst = added.get('<｜Assistant｜>')!;
    expect(ds.encode('<｜User｜>hi<｜Assistant｜>', { addSpecialTokens: false }).filter((i) => i === user || i === asst)).toEqual([user, asst]);
    expect(ds.tokenId('<｜Assistant｜>')).toBe(asst);
    expect(ds.maxId).toBe(Math.max(...dsJson.added_tokens.map((a: any) => a.id)));
  });

  it('encodes English: whole-word tokens from the vocab, BOS only with special tokens', () => {
    const v = dsJson.model.vocab;
    const ids = ds.encode('Hello world', { addSpecialTokens: false });
    expect(ids).toEqual([v['Hello'], v['Ġworld']]);
    expect(ds.encode('Hello world')).toEqual([ds.bosId, ...ids]); // LlamaTokenizerFast with add_bos_token
  });

  it('encodes Chinese and mixed text losslessly (checked through the byte alphabet)', () => {
    for (const s of ['你好，世界', '患者男性，65岁，主诉胸痛3小时。', 'BP 160/95 mmHg\n\n  indented\ttab', 'emoji 🙂 ok', 'ünïcödé façade']) {
      const ids = ds.encode(s, { addSpecialTokens: false });
      expect(bytesOf(ids, dsJson).toString('utf8')).toBe(s);
      expect(ds.decode(ids)).toBe(s);
      expect(ids.length).toBeLessThan(Buffer.byteLength(s)); // merges happened
    }
    // DeepSeek's pre-tokenizer isolates CJK runs and groups digits by at most 3.
    const v = dsJson.model.vocab;
    const ids = ds.encode('12345', { addSpecialTokens: false });
    expect(ids).toEqual([v['123'], v['45']]);
  });

  it('decode keeps or skips special tokens', () => {
    const ids = ds.encode('Hi there');
    expect(ds.decode(ids)).toBe('<｜begin▁of▁sentence｜>Hi there');
    expect(ds.decode(ids, { skipSpecialTokens: true })).toBe('Hi there');
  });

  it("renders DeepSeek's chat format with the model's own template", () => {
    const msgs = [
      { role: 'system', content: 'You are a clinician.' },
      { role: 'user', content: '胸痛怎么办？' },
      { role: 'assistant', content: 'Call emergency services.' },
      { role: 'user', content: 'Thanks' },
    ];
    expect(ds.applyChatTemplate(msgs, { addGenerationPrompt: true })).toBe(
      '<｜begin▁of▁sentence｜>You are a clinician.<｜User｜>胸痛怎么办？<｜Assistant｜>Call emergency services.<｜end▁of▁sentence｜><｜User｜>Thanks<｜Assistant｜>',
    );
    expect(ds.applyChatTemplate(msgs.slice(0, 3))).toBe(
      '<｜begin▁of▁sentence｜>You are a clinician.<｜User｜>胸痛怎么办？<｜Assistant｜>Call emergency services.<｜end▁of▁sentence｜>',
    );
    const rendered = ds.applyChatTemplate(msgs.slice(1, 2), { addGenerationPrompt: true });
    const ids = ds.encode(rendered, { addSpecialTokens: false });
    expect(ids[0]).toBe(ds.bosId);
    expect(ids[1]).toBe(ds.tokenId('<｜User｜>'));
    expect(ids[ids.length - 1]).toBe(ds.tokenId('<｜Assistant｜>'));
  });
});

describe('generated byte-level tokenizer of tiny models', () => {
  let tok: Tokenizer;
  let json: any;
  let dir: string;
  beforeAll(() => {
    dir = join(root, 'tiny');
    writeTinyModel({ arch: 'llama', out: dir, seed: 1, layers: 1, hidden: 16, heads: 2, kvHeads: 2 });
    tok = loadTokenizer(dir);
    json = JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8'));
  });

  it('maps every byte, applies merges, round-trips any text', () => {
    const v = json.model.vocab;
    expect(tok.encode(' the', { addSpecialTokens: false })).toEqual([v['Ġthe']]);
    expect(tok.encode('A', { addSpecialTokens: false })).toEqual([v['A']]);
    for (const s of ['the patient in there', '血压 160/95', '\u0000\u0001 ctrl', '']) {
      const ids = tok.encode(s, { addSpecialTokens: false });
      expect(bytesOf(ids, json).toString('utf8')).toBe(s);
      expect(tok.decode(ids)).toBe(s);
    }
    const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    expect(tok.maxId).toBeLessThan(cfg.vocab_size);
    expect(tok.bosId).toBe(cfg.bos_token_id);
    expect(tok.eosIds).toEqual([cfg.eos_token_id]);
    expect(tok.encode('x')[0]).toBe(cfg.bos_token_id);
  });

  it('uses the DeepSeek template and the specials as single tokens', () => {
    const text = tok.applyChatTemplate([{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'yo' }]);
    expect(text).toBe('<｜begin▁of▁sentence｜><｜User｜>hi<｜Assistant｜>yo<｜end▁of▁sentence｜>');
    const ids = tok.encode(text, { addSpecialTokens: false });
    expect(ids).toEqual([tok.bosId, tok.tokenId('<｜User｜>'), ...tok.encode('hi', { addSpecialTokens: false }), tok.tokenId('<｜Assistant｜>'), ...tok.encode('yo', { addSpecialTokens: false }), tok.eosIds[0]]);
  });

  it('template errors and missing files are FEDLORA_ERR_TOKENIZER', () => {
    const d2 = join(root, 'raise');
    mkdirSync(d2);
    copyFileSync(join(dir, 'tokenizer.json'), join(d2, 'tokenizer.json'));
    const cfg = JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8'));
    cfg.chat_template = "{% for m in messages %}{% if m['role'] == 'tool' %}{{ raise_exception('tool role not allowed') }}{% endif %}{{ m['content'] }}{% endfor %}";
    writeFileSync(join(d2, 'tokenizer_config.json'), JSON.stringify(cfg));
    const t2 = loadTokenizer(d2);
    expect(t2.applyChatTemplate([{ role: 'user', content: 'a' }])).toBe('a');
    let e: unknown;
    try {
      t2.applyChatTemplate([{ role: 'tool', content: 'x' }]);
    } catch (x) {
      e = x;
    }
    expect(e).toBeInstanceOf(FedloraError);
    expect((e as FedloraError).code).toBe('FEDLORA_ERR_TOKENIZER');
    expect((e as FedloraError).message).toContain('tool role not allowed');
    expect(() => loadTokenizer(join(root, 'none'))).toThrow(/tokenizer.json: missing/);
    cfg.bos_token = '<nope>';
    writeFileSync(join(d2, 'tokenizer_config.json'), JSON.stringify(cfg));
    expect(() => loadTokenizer(d2)).toThrow(/bos_token "<nope>" is not a token/);
  });
});
