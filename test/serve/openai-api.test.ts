// The assistant's OpenAI-compatible API, driven by the official `openai` npm client against a
// real server on loopback (tiny model on the engine backend): plain and streamed chat and
// completions, the disclaimer in every answer, the version that answered, stop sequences,
// seeds, wrong/revoked keys (401), an over-long prompt (400), a full queue (429 + Retry-After)
// and cancellation when the client goes away.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import OpenAI from 'openai';
import { startServe, type RunningServe } from '../../site-agent/serve/run.ts';
import { openSiteDb } from '../../site-agent/site-db.ts';
import { revokeUser, addUser } from '../../site-agent/serve/users.ts';
import { DEFAULT_DISCLAIMER } from '../../site-agent/serve/config.ts';
import { makeSite, rmDir, type TestSite } from './helpers.ts';

let site: TestSite;
let srv: RunningServe;
let client: OpenAI;
const MODEL = 'fedlora-assistant';

beforeAll(async () => {
  // One request at a time and no waiting room, so a second concurrent request is refused.
  site = makeSite('serve-openai', { concurrency: 1, queue_size: 0, max_prompt_tokens: 1024, max_tokens_limit: 1500 });
  srv = await startServe(site.siteDir);
  client = new OpenAI({ apiKey: site.keys.clinician, baseURL: `${srv.url}/v1`, maxRetries: 0 });
});
afterAll(async () => {
  await srv?.close();
  rmDir(site.dir);
});

const storedAnswer = (id: string) => {
  const db = openSiteDb(site.siteDir);
  try {
    return db.prepare('SELECT * FROM serve_answers WHERE id = ?').get(id) as Record<string, unknown> | undefined;
  } finally {
    db.close();
  }
};

describe('OpenAI-compatible API (openai npm client)', () => {
  it('lists the served model with the version it answers with', async () => {
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual([MODEL]);
    expect((models.data[0] as unknown as { fedlora: { model_version: string } }).fedlora.model_version).toBe('base');
  });

  it('chat completion: content ends with the disclaimer, answer stored with its version', async () => {
    const r = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'A patient has chest pain. What first?' }], max_tokens: 12, temperature: 0 });
    const content = r.choices[0].message.content!;
    expect(content.endsWith(DEFAULT_DISCLAIMER.en)).toBe(true);
    expect(r.system_fingerprint).toBe('fedlora-base');
    const ext = (r as unknown as { fedlora: { disclaimer: string; model_version: string; answer_id: string } }).fedlora;
    expect(ext).toMatchObject({ disclaimer: DEFAULT_DISCLAIMER.en, model_version: 'base', answer_id: r.id });
    expect(r.usage!.completion_tokens).toBeGreaterThan(0);
    expect(r.usage!.completion_tokens).toBeLessThanOrEqual(12);
    const row = storedAnswer(r.id)!;
    expect(row).toMatchObject({ user_name: 'dr.li', model_version: 'base', endpoint: '/v1/chat/completions' });
    expect(row.question_deid).toBe('A patient has chest pain. What first?');
  });

  it('a Chinese question gets the Chinese disclaimer; a phone number is not stored', async () => {
    const r = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: '患者胸痛，电话13812345678，怎么办？' }], max_tokens: 8 });
    expect(r.choices[0].message.content!.endsWith(DEFAULT_DISCLAIMER.zh)).toBe(true);
    const row = storedAnswer(r.id)!;
    expect(String(row.question_deid)).not.toContain('13812345678');
    expect(String(row.question_deid)).toContain('[PHONE]');
  });

  it('streamed chat: deltas add up to the answer, the last content is the disclaimer, final chunk names the version', async () => {
    const stream = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Dose of aspirin after MI?' }], max_tokens: 16, stream: true, stream_options: { include_usage: true } });
    let content = '';
    const chunks: OpenAI.Chat.Completions.ChatCompletionChunk[] = [];
    for await (const c of stream) {
      chunks.push(c);
      content += c.choices[0]?.delta?.content ?? '';
    }
    expect(new Set(chunks.map((c) => c.id)).size).toBe(1);
    expect(content.endsWith(DEFAULT_DISCLAIMER.en)).toBe(true);
    const last = chunks.filter((c) => c.choices.length > 0).at(-1)!;
    expect(['stop', 'length']).toContain(last.choices[0].finish_reason);
    expect((last as unknown as { fedlora: { model_version: string } }).fedlora.model_version).toBe('base');
    expect(chunks.at(-1)!.usage!.completion_tokens).toBeGreaterThan(0);
    expect(storedAnswer(chunks[0].id)).toBeDefined();
  });

  it('completions, plain and streamed, end with the disclaimer', async () => {
    const r = await client.completions.create({ model: MODEL, prompt: 'Hypertension first-line treatment:', max_tokens: 10 });
    expect(r.choices[0].text.endsWith(DEFAULT_DISCLAIMER.en)).toBe(true);
    const s = await client.completions.create({ model: MODEL, prompt: 'Asthma:', max_tokens: 10, stream: true });
    let text = '';
    for await (const c of s) text += c.choices[0]?.text ?? '';
    expect(text.endsWith(DEFAULT_DISCLAIMER.en)).toBe(true);
  });

  it('a seed makes sampling repeatable; a stop sequence cuts the answer before it', async () => {
    const ask = (o: { seed?: number; stop?: string[]; temperature: number }) =>
      client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Explain sepsis.' }], max_tokens: 30, ...o }).then((r) => r.choices[0].message.content!);
    expect(await ask({ seed: 5, temperature: 1 })).toBe(await ask({ seed: 5, temperature: 1 }));
    const full = (await ask({ temperature: 0 })).split('\n\n---\n')[0];
    // Two whole characters that first occur after the start (a random model writes bytes, not words).
    const at = [...full].findIndex((_c, i) => i > 0 && /^[^\uFFFD\s]{2}$/u.test(full.slice(i, i + 2)) && full.indexOf(full.slice(i, i + 2)) === i);
    expect(at, `no usable stop string in the greedy answer ${JSON.stringify(full)}`).toBeGreaterThan(0);
    const stop = full.slice(at, at + 2);
    const cut = (await ask({ temperature: 0, stop: [stop] })).split('\n\n---\n')[0];
    expect(cut).toBe(full.slice(0, full.indexOf(stop)).trim());
  });

  it('a wrong key and a revoked key get 401', async () => {
    const bad = new OpenAI({ apiKey: 'flk_000000000000_' + 'A'.repeat(43), baseURL: `${srv.url}/v1`, maxRetries: 0 });
    const e1 = await bad.models.list().catch((e) => e);
    expect(e1).toBeInstanceOf(OpenAI.AuthenticationError);
    expect(e1.status).toBe(401);
    expect(e1.code).toBe('FEDLORA_ERR_UNAUTHENTICATED');
    const db = openSiteDb(site.siteDir);
    const key = addUser(db, 'dr.temp', 'clinician').key;
    db.close();
    const temp = new OpenAI({ apiKey: key, baseURL: `${srv.url}/v1`, maxRetries: 0 });
    expect((await temp.models.list()).data.length).toBe(1);
    const db2 = openSiteDb(site.siteDir);
    revokeUser(db2, 'dr.temp');
    db2.close();
    expect(await temp.models.list().catch((e) => e.status)).toBe(401);
  });

  it('an over-long prompt is a clear 400; so is max_tokens over the limit and an unknown model (404)', async () => {
    const long = 'The patient reports chest pain radiating to the left arm. '.repeat(40); // ~2300 byte tokens
    const e = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: long }] }).catch((x) => x);
    expect(e).toBeInstanceOf(OpenAI.BadRequestError);
    expect(e.code).toBe('FEDLORA_ERR_PROMPT_TOO_LONG');
    expect(e.message).toMatch(/prompt is \d+ tokens; this server accepts at most 1024 \(serve\.max_prompt_tokens\)/);
    const e2 = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'hi' }], max_tokens: 5000 }).catch((x) => x);
    expect(e2.status).toBe(400);
    expect(e2.message).toContain('serve.max_tokens_limit');
    const e3 = await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }).catch((x) => x);
    expect(e3).toBeInstanceOf(OpenAI.NotFoundError);
    expect(e3.message).toContain(MODEL);
    const e4 = await client.chat.completions.create({ model: MODEL, messages: [] }).catch((x) => x);
    expect(e4.status).toBe(400);
    expect(e4.message).toMatch(/messages/);
  });

  it('a full queue answers 429 with Retry-After; a client that goes away cancels its generation', async () => {
    const first = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Write a long differential diagnosis.' }], max_tokens: 1500, temperature: 1, seed: 1, stream: true });
    const it1 = first[Symbol.asyncIterator]();
    const head = await it1.next(); // the first chunk: the request holds the only slot now
    expect(head.done).toBe(false);
    const e = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 }).catch((x) => x);
    expect(e).toBeInstanceOf(OpenAI.RateLimitError);
    expect(e.status).toBe(429);
    expect(Number(e.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(e.code).toBe('FEDLORA_ERR_RATE_LIMITED');
    first.controller.abort();
    const id = head.value!.id;
    // The cancelled answer is stored (and audited) once the server notices the closed connection.
    let row: Record<string, unknown> | undefined;
    while (!(row = storedAnswer(id))) await new Promise((r) => setTimeout(r, 20));
    expect(row.finish_reason).toBe('cancelled');
    // Cancelled well before its 1500 tokens: the slot is free again for the next request.
    const next = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 });
    expect(next.choices[0].message.content).toContain(DEFAULT_DISCLAIMER.en);
  });

  it('/metrics: time to first token, decode tokens/s, queue length and refusals in Prometheus format', async () => {
    const text = await (await fetch(`${srv.url}/metrics`)).text();
    const value = (re: RegExp) => Number(re.exec(text)?.[1]);
    expect(text).toContain('# TYPE fedlora_serve_time_to_first_token_seconds histogram');
    expect(value(/^fedlora_serve_time_to_first_token_seconds_count (\d+)/m)).toBeGreaterThan(5);
    expect(value(/^fedlora_serve_decode_tokens_per_second_count (\d+)/m)).toBeGreaterThan(0);
    expect(value(/^fedlora_serve_queue_length (\d+)/m)).toBe(0);
    expect(value(/^fedlora_serve_refused_total\{code="FEDLORA_ERR_RATE_LIMITED"\} (\d+)/m)).toBe(1);
    expect(value(/^fedlora_serve_refused_total\{code="FEDLORA_ERR_PROMPT_TOO_LONG"\} (\d+)/m)).toBe(1);
    expect(value(/^fedlora_serve_answers_total\{finish="cancelled"\} (\d+)/m)).toBe(1);
  });
});
