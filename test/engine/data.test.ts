import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeTinyModel } from '../../site-agent/engine/checkpoint/index.ts';
import { loadTokenizer, type Tokenizer } from '../../site-agent/engine/tokenizer.ts';
import { loadJsonlExamples, loadExamplesFromLines, packExamples, packExamplesWithStats, batchStats, IGNORE_INDEX } from '../../site-agent/engine/data/index.ts';
import type { Example, PackedBatch } from '../../site-agent/engine/types.ts';
import { FedloraError } from '../../shared/errors.ts';

let root: string;
let tok: Tokenizer;
beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'fedlora-data-'));
  writeTinyModel({ arch: 'llama', out: join(root, 'm'), seed: 1, layers: 1, hidden: 16, heads: 2, kvHeads: 2 });
  tok = loadTokenizer(join(root, 'm'));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

const enc = (s: string) => tok.encode(s, { addSpecialTokens: false });
function jsonl(name: string, lines: (object | string)[]): string {
  const f = join(root, name);
  writeFileSync(f, lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n') + '\n');
  return f;
}
const learned = (ex: Example) => ex.inputIds.filter((_, i) => ex.labels[i] !== IGNORE_INDEX);

describe('JSONL -> examples', () => {
  it('chat: the model template renders it; only assistant turns (with their end token) carry loss', async () => {
    const messages = [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'chest pain?' },
      { role: 'assistant', content: 'see a doctor' },
      { role: 'user', content: 'thanks' },
      { role: 'assistant', content: 'you are welcome' },
    ];
    const f = jsonl('chat.jsonl', [{ messages }]);
    const { examples, stats } = await loadJsonlExamples(f, tok, { maxSeqLen: 512 });
    expect(examples).toHaveLength(1);
    const ex = examples[0];
    // ids are those of the whole rendered conversation
    const full = tok.applyChatTemplate(messages);
    expect(ex.inputIds).toEqual(enc(full));
    expect(ex.labels).toHaveLength(ex.inputIds.length);
    // the learned tokens are exactly: answer1 <eos> answer2 <eos>
    const eos = tok.eosIds[0];
    expect(learned(ex)).toEqual([...enc('see a doctor'), eos, ...enc('you are welcome'), eos]);
    // labels equal input ids where not ignored (unshifted HF labels)
    ex.labels.forEach((l, i) => l !== IGNORE_INDEX && expect(l).toBe(ex.inputIds[i]));
    expect(stats).toMatchObject({ lines: 1, examples: 1, skipped: [], truncated: [] });
    expect(stats.targetTokens).toBe(learned(ex).length);
  });

  it("with DeepSeek-V3's real tokenizer: span-wise ids equal whole-text ids; Chinese answers are learned", async () => {
    const dsDir = join(root, 'ds');
    writeTinyModel({ arch: 'llama', out: dsDir, seed: 1, layers: 1, hidden: 8, heads: 2, kvHeads: 1, tokenizer: 'deepseek' });
    const ds = loadTokenizer(dsDir);
    const messages = [
      { role: 'user', content: '患者胸痛3小时，心电图ST段抬高。诊断？' },
      { role: 'assistant', content: '急性ST段抬高型心肌梗死（STEMI）。' },
      { role: 'user', content: 'Next step?' },
      { role: 'assistant', content: ' Primary PCI within 90 minutes.' },
    ];
    const r = await loadExamplesFromLines([JSON.stringify({ messages })], 'zh', ds, { maxSeqLen: 256, vocabSize: 129280 });
    const ex = r.examples[0];
    expect(ex.inputIds).toEqual(ds.encode(ds.applyChatTemplate(messages), { addSpecialTokens: false }));
    const e = (t: string) => ds.encode(t, { addSpecialTokens: false });
    expect(learned(ex)).toEqual([...e('急性ST段抬高型心肌梗死（STEMI）。'), 1, ...e(' Primary PCI within 90 minutes.'), 1]);
    expect(ex.inputIds[0]).toBe(0);
  });

  it('prompt/completion and pre-tokenized records', async () => {
    const f = jsonl('mixed.jsonl', [
      { prompt: 'Q: fever? A:', completion: ' paracetamol' },
      { input_ids: [5, 6, 7, 8] },
      { input_ids: [5, 6, 7, 8], labels: [-100, -100, 7, 8] },
    ]);
    const { examples } = await loadJsonlExamples(f, tok, { maxSeqLen: 64 });
    expect(examples[0].inputIds).toEqual([tok.bosId, ...enc('Q: fever? A:'), ...enc(' paracetamol'), tok.eosIds[0]]);
    expect(learned(examples[0])).toEqual([...enc(' paracetamol'), tok.eosIds[0]]);
    expect(examples[1]).toEqual({ inputIds: [5, 6, 7, 8], labels: [5, 6, 7, 8] });
    expect(examples[2].labels).toEqual([-100, -100, 7, 8]);
  });

  it('every malformed line is reported with file:line; nothing is silently dropped', async () => {
    const f = jsonl('bad.jsonl', [
      { messages: [{ role: 'user', content: 'a' }, { role: 'assistant', content: 'b' }] },
      '{"messages": [',
      { messages: [{ role: 'doctor', content: 'x' }] },
      '',
      { foo: 1 },
      { input_ids: [1, 2, 99999] },
      { messages: [{ role: 'user', content: 'only a question' }] },
      { input_ids: [1, 2], labels: [1] },
    ]);
    let e: unknown;
    try {
      await loadJsonlExamples(f, tok, { maxSeqLen: 64 });
    } catch (x) {
      e = x;
    }
    expect(e).toBeInstanceOf(FedloraError);
    const fe = e as FedloraError;
    expect(fe.code).toBe('FEDLORA_ERR_DATA_LINE');
    expect(fe.message).toContain('6 invalid line(s)');
    expect(fe.message).toContain(`${f}:2: not valid JSON`);
    expect(fe.message).toContain(`${f}:3: messages[0].role "doctor"`);
    expect(fe.message).toContain(`${f}:5: record has none of`);
    expect(fe.message).toContain(`${f}:6: "input_ids"[2] = 99999 is not a token id`);
    expect(fe.message).toContain(`${f}:7: no assistant message`);
    expect(fe.message).toContain(`${f}:8: "labels" has 1 entries but "input_ids" has 2`);
    // opt-in skipping reports exactly which lines were skipped
    const r = await loadJsonlExamples(f, tok, { maxSeqLen: 64, skipInvalid: true });
    expect(r.examples).toHaveLength(1);
    expect(r.sourceLines).toEqual([1]);
    expect(r.stats.skipped.map((p) => p.line)).toEqual([2, 3, 5, 6, 7, 8]);
    expect(r.stats.blankLines).toBe(1);
    await expect(loadJsonlExamples(join(root, 'missing.jsonl'), tok, { maxSeqLen: 64 })).rejects.toThrow(/does not exist/);
    await expect(loadJsonlExamples(f, tok, { maxSeqLen: 64, vocabSize: 100 })).rejects.toThrow(/produces ids up to \d+, but the model's vocab_size is 100/);
  });

  it('too-long examples are truncated and counted (or rejected on request)', async () => {
    const long = 'word '.repeat(80);
    const lines = [{ prompt: 'p', completion: long }, { prompt: 'p', completion: 'short' }];
    const r = await loadExamplesFromLines(lines.map((l) => JSON.stringify(l)), 'gen', tok, { maxSeqLen: 32 });
    expect(r.stats.truncated).toEqual([1]);
    expect(r.examples[0].inputIds).toHaveLength(32);
    expect(r.examples[1].inputIds.length).toBeLessThan(32);
    await expect(loadExamplesFromLines(lines.map((l) => JSON.stringify(l)), 'gen', tok, { maxSeqLen: 32, overflow: 'error' })).rejects.toThrow(/gen:1: \d+ tokens exceed maxSeqLen 32/);
    // truncation that leaves nothing to learn is reported, not hidden
    const r2 = await loadExamplesFromLines([JSON.stringify({ prompt: long, completion: 'x' }), JSON.stringify({ prompt: 'a', completion: 'b' })], 'gen2', tok, { maxSeqLen: 16 });
    expect(r2.stats.droppedNoTargets).toEqual([1]);
    expect(r2.examples).toHaveLength(1);
  });
});

function randomExamples(n: number, seed: number, minLen: number, maxLen: number): Example[] {
  let s = seed;
  const rnd = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648);
  return Array.from({ length: n }, (_, k) => {
    const len = minLen + Math.floor(rnd() * (maxLen - minLen + 1));
    const inputIds = Array.from({ length: len }, (_, i) => 1 + ((k * 31 + i * 7) % 200));
    const labels = inputIds.map((id, i) => (i < len / 3 ? IGNORE_INDEX : id));
    return { inputIds, labels };
  });
}

/** Read the packed segments back out of the batches (independent of the packer's internals). */
function unpack(batches: PackedBatch[]): { ids: number[]; targets: number[]; positions: number[] }[] {
  const segs: { ids: number[]; targets: number[]; positions: number[] }[] = [];
  for (const b of batches) {
    for (let r = 0; r < b.batch; r++) {
      let cur: (typeof segs)[number] | null = null;
      let curId = 0;
      for (let t = 0; t < b.seq; t++) {
        const i = r * b.seq + t;
        const sid = b.segmentIds[i];
        if (sid === 0) {
          expect(b.targets[i]).toBe(-100n);
          expect(b.positionIds[i]).toBe(0n);
          cur = null;
          continue;
        }
        if (sid !== curId || !cur) {
          expect(sid).toBe(curId + 1); // segment ids count up within a row
          cur = { ids: [], targets: [], positions: [] };
          segs.push(cur);
          curId = sid;
        }
        cur.ids.push(Number(b.inputIds[i]));
        cur.targets.push(Number(b.targets[i]));
        cur.positions.push(Number(b.positionIds[i]));
      }
      curId = 0;
    }
  }
  return segs;
}

describe('packing', () => {
  it('packs every example exactly once with restarted positions and in-segment next-token targets', () => {
    const exs = randomExamples(40, 1, 3, 30);
    const batches = packExamples(exs, { batch: 4, seq: 64, seed: 9, shuffle: true });
    for (const b of batches) {
      expect([b.batch, b.seq, b.inputIds.length, b.targets.length, b.segmentIds.length]).toEqual([4, 64, 256, 256, 256]);
      let counted = 0, real = 0;
      for (let i = 0; i < 256; i++) {
        if (b.targets[i] !== -100n) counted++;
        if (b.segmentIds[i] !== 0) real++;
      }
      expect([b.countedTokens, b.realTokens]).toEqual([counted, real]);
    }
    const segs = unpack(batches);
    expect(segs).toHaveLength(40);
    const byKey = new Map(exs.map((e) => [e.inputIds.join(','), e]));
    for (const s of segs) {
      const ex = byKey.get(s.ids.join(','))!;
      expect(ex).toBeDefined();
      byKey.delete(s.ids.join(','));
      expect(s.positions).toEqual(s.ids.map((_, i) => i));
      expect(s.targets).toEqual([...ex.labels.slice(1), -100]);
    }
    expect(byKey.size).toBe(0);
    const expectedCounted = exs.reduce((a, e) => a + e.labels.slice(1).filter((l) => l !== -100).length, 0);
    expect(batchStats(batches).countedTokens).toBe(expectedCounted);
  });

  it('is deterministic for a seed, differs across seeds, and wastes little on padding', () => {
    const exs = randomExamples(60, 2, 4, 40);
    const a = packExamplesWithStats(exs, { batch: 2, seq: 128, seed: 1 });
    const b = packExamplesWithStats(exs, { batch: 2, seq: 128, seed: 1 });
    const c = packExamplesWithStats(exs, { batch: 2, seq: 128, seed: 2 });
    expect(a.batches.map((x) => [...x.inputIds])).toEqual(b.batches.map((x) => [...x.inputIds]));
    expect(a.batches.map((x) => [...x.inputIds])).not.toEqual(c.batches.map((x) => [...x.inputIds]));
    const naive = packExamplesWithStats(exs, { batch: 2, seq: 128, seed: 1, mode: 'bucket' });
    expect(a.stats.paddingFraction).toBeLessThan(0.25);
    expect(naive.stats.paddingFraction).toBeGreaterThan(0.7);
    expect(a.stats.realTokens).toBe(exs.reduce((s, e) => s + e.inputIds.length, 0));
    expect(a.stats.batches).toBeLessThan(naive.stats.batches / 2);
  });

  it('bucket mode: one example per row, per-batch seq rounded up, lengths grouped', () => {
    const exs = randomExamples(33, 3, 2, 50);
    const batches = packExamples(exs, { batch: 4, seq: 64, seed: 5, mode: 'bucket', bucketMultiple: 16 });
    expect(batches.reduce((s, b) => s + b.batch, 0)).toBe(36);
    for (const b of batches) {
      expect(b.seq % 16).toBe(0);
      let longest = 0;
      for (let r = 0; r < b.batch; r++) {
        let len = 0;
        for (let t = 0; t < b.seq; t++) {
          const sid = b.segmentIds[r * b.seq + t];
          expect(sid === 0 || sid === 1).toBe(true);
          if (sid) len++;
        }
        longest = Math.max(longest, len);
      }
      expect(b.seq).toBe(Math.ceil(longest / 16) * 16);
    }
    expect(unpack(batches)).toHaveLength(33);
    const fixed = batchStats(packExamples(exs, { batch: 4, seq: 64, seed: 5, mode: 'bucket' }));
    expect(batchStats(batches).paddingFraction).toBeLessThan(fixed.paddingFraction);
  });

  it('rejects examples longer than seq and bad shapes', () => {
    expect(() => packExamples(randomExamples(3, 1, 10, 10), { batch: 1, seq: 8, seed: 1 })).toThrow(/example \d+: 10 tokens do not fit seq 8/);
    expect(() => packExamples([], { batch: 0, seq: 8, seed: 1 })).toThrow(/batch must be a positive integer/);
    expect(tok.decode([])).toBe('');
  });
});
