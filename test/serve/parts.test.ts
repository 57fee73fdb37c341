// Small parts of the assistant: DeepSeek-R1 reasoning split across stream pieces, the bounded
// queue, stop-sequence hold-back.
import { describe, it, expect } from 'vitest';
import { ThinkSplitter, splitThink } from '../../site-agent/serve/think.ts';
import { RequestQueue, QueueFullError } from '../../site-agent/serve/queue.ts';
import { pendingStopPrefix } from '../../site-agent/engine/index.ts';

describe('<think> split', () => {
  it('splits reasoning from the answer whatever the piece boundaries', () => {
    const text = '<think>The patient is 70; check renal function.</think>\nReduce metformin? Ask the doctor.';
    for (let size = 1; size <= 9; size++) {
      const sp = new ThinkSplitter();
      let reasoning = '', content = '';
      for (let i = 0; i < text.length; i += size) {
        const p = sp.push(text.slice(i, i + size));
        reasoning += p.reasoning;
        content += p.content;
      }
      const e = sp.end();
      expect(reasoning + e.reasoning).toBe('The patient is 70; check renal function.');
      expect((content + e.content).trim()).toBe('Reduce metformin? Ask the doctor.');
    }
  });
  it('R1 template: output starting inside the reasoning; no tag = all answer; a later <think> is answer text', () => {
    expect(splitThink('thinking…</think>answer', true)).toEqual({ reasoning: 'thinking…', content: 'answer' });
    expect(splitThink('plain answer')).toEqual({ reasoning: '', content: 'plain answer' });
    expect(splitThink('<think>a</think>b <think> c')).toEqual({ reasoning: 'a', content: 'b <think> c' });
    expect(splitThink('<think>unfinished')).toEqual({ reasoning: 'unfinished', content: '' });
  });
});

describe('request queue', () => {
  it('runs `concurrency` at once, queues `queueSize`, refuses beyond with a Retry-After', async () => {
    const q = new RequestQueue(1, 1);
    const r1 = await q.acquire();
    const p2 = q.acquire();
    expect(q.length).toBe(1);
    const e = await q.acquire().catch((x) => x);
    expect(e).toBeInstanceOf(QueueFullError);
    expect(e.code).toBe('FEDLORA_ERR_RATE_LIMITED');
    expect(e.retryAfterS).toBeGreaterThanOrEqual(1);
    r1();
    const r2 = await p2;
    expect(q.active).toBe(1);
    const drained = q.drain();
    r2();
    await drained;
    expect(q.active + q.length).toBe(0);
  });
  it('a waiting request whose client leaves is removed from the queue', async () => {
    const q = new RequestQueue(1, 2);
    const r1 = await q.acquire();
    const ac = new AbortController();
    const p = q.acquire(ac.signal);
    expect(q.length).toBe(1);
    ac.abort(new Error('gone'));
    await expect(p).rejects.toThrow('gone');
    expect(q.length).toBe(0);
    r1();
  });
});

describe('stop sequences', () => {
  it('holds back the longest tail that may start a stop sequence', () => {
    expect(pendingStopPrefix('abc###', ['###END'])).toBe(3);
    expect(pendingStopPrefix('abc#', ['###END', '#x'])).toBe(1);
    expect(pendingStopPrefix('abc', ['###'])).toBe(0);
  });
});
