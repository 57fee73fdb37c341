// The OpenAI-compatible API: GET /v1/models, POST /v1/chat/completions and /v1/completions,
// plain or streamed (server-sent events). Every answer's content ends with the site's
// disclaimer (after DISCLAIMER_SEPARATOR), so a client that shows `content` shows it; the
// disclaimer, the adapter version that answered and the cited passages are also in the
// response's `fedlora` object (and in the final chunk of a stream). DeepSeek-R1 reasoning comes
// as `reasoning_content`, apart from `content`.
import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { fail } from '../../../shared/errors.ts';
import { answer, type Answer, type AnswerMeta, type AssistantDeps } from '../answer.ts';
import type { RequireRole } from '../auth.ts';
import { currentServing } from '../gate/serving.ts';
import { clientGone, openSse } from './sse.ts';
import { openaiErrorBody, openaiErrorHandler, toFedloraError } from './errors.ts';

const Text = z.union([z.string(), z.array(z.object({ type: z.literal('text'), text: z.string() }).passthrough())]);
const Message = z.object({ role: z.enum(['system', 'developer', 'user', 'assistant']), content: Text.nullable().default('') }).passthrough();
const Sampling = {
  model: z.string().min(1),
  max_tokens: z.number().int().positive().nullish(),
  max_completion_tokens: z.number().int().positive().nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  seed: z.number().int().nullish(),
  stop: z.union([z.string(), z.array(z.string()).max(4)]).nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().optional() }).passthrough().nullish(),
  n: z.literal(1).nullish(),
};
const ChatBody = z.object({ ...Sampling, messages: z.array(Message).min(1) }).passthrough();
const CompletionBody = z.object({ ...Sampling, prompt: z.string() }).passthrough();

const textOf = (c: z.infer<typeof Text> | null): string => (c === null ? '' : typeof c === 'string' ? c : c.map((p) => p.text).join(''));
const stopList = (s: string | string[] | null | undefined): string[] => (s == null ? [] : typeof s === 'string' ? [s] : s);

export interface OpenAiRouteOptions {
  assistant: AssistantDeps;
  requireRole: RequireRole;
}

export const openaiRoutes: FastifyPluginAsyncZod<OpenAiRouteOptions> = async (app, o) => {
  const d = o.assistant;
  const modelName = d.config.model_name;
  app.setErrorHandler(openaiErrorHandler);
  app.addHook('onRequest', o.requireRole('clinician'));

  const checkModel = (model: string) => {
    if (model !== modelName) throw fail('FEDLORA_ERR_MODEL_NOT_SERVED', `model ${JSON.stringify(model)} is not served here; this server serves ${JSON.stringify(modelName)} (GET /v1/models)`);
  };
  const fedloraOf = (a: AnswerMeta) => ({
    answer_id: a.id, model_version: a.modelVersion, adapter_sha256: a.adapterSha256, disclaimer: a.disclaimer,
    citations: a.citations.map((c) => ({ n: c.n, passage_id: c.passageId, source: c.source, heading: c.heading, text: c.text })),
  });
  const usageOf = (a: Answer) => ({ prompt_tokens: a.promptTokens, completion_tokens: a.completionTokens, total_tokens: a.promptTokens + a.completionTokens });
  const finishOf = (a: Answer) => (a.finish === 'length' ? 'length' : 'stop');

  app.get('/v1/models', async () => {
    const v = currentServing(d.db);
    return { object: 'list', data: [{ id: modelName, object: 'model', created: 0, owned_by: 'fedlora-site', fedlora: { model_version: v.label, adapter_sha256: v.sha256 } }] };
  });

  app.post('/v1/chat/completions', { schema: { body: ChatBody } }, async (req, reply) => {
    const b = req.body;
    checkModel(b.model);
    const messages = b.messages.map((m) => ({ role: m.role === 'developer' ? 'system' : m.role, content: textOf(m.content ?? '') }));
    const common = {
      kind: 'chat' as const, messages, maxTokens: b.max_completion_tokens ?? b.max_tokens ?? undefined, temperature: b.temperature ?? undefined, topP: b.top_p ?? undefined,
      seed: b.seed ?? undefined, stop: stopList(b.stop), user: req.user!.name, endpoint: '/v1/chat/completions',
    };
    if (!b.stream) {
      const a = await answer(d, { ...common, signal: clientGone(reply) });
      reply.header('X-Fedlora-Model-Version', a.modelVersion);
      return {
        id: a.id, object: 'chat.completion', created: a.created, model: modelName, system_fingerprint: `fedlora-${a.modelVersion}`,
        choices: [{ index: 0, message: { role: 'assistant', content: a.content, reasoning_content: a.reasoning || null }, logprobs: null, finish_reason: finishOf(a) }],
        usage: usageOf(a), fedlora: fedloraOf(a),
      };
    }
    return streamed(reply, (signal, chunk) => answer(d, { ...common, signal }, {
      onStart: (m) => chunk(m, { role: 'assistant', content: '' }),
      onReasoning: (t) => chunk(null, { reasoning_content: t }),
      onContent: (t) => chunk(null, { content: t }),
    }), (a, send) => {
      send(chunkBody(a, { object: 'chat.completion.chunk', choices: [{ index: 0, delta: {}, logprobs: null, finish_reason: finishOf(a) }], fedlora: fedloraOf(a) }));
      if (b.stream_options?.include_usage) send(chunkBody(a, { object: 'chat.completion.chunk', choices: [], usage: usageOf(a) }));
    }, (m, delta) => chunkBody(m, { object: 'chat.completion.chunk', choices: [{ index: 0, delta, logprobs: null, finish_reason: null }] }));
  });

  app.post('/v1/completions', { schema: { body: CompletionBody } }, async (req, reply) => {
    const b = req.body;
    checkModel(b.model);
    const common = {
      kind: 'completion' as const, prompt: b.prompt, maxTokens: b.max_tokens ?? undefined, temperature: b.temperature ?? undefined, topP: b.top_p ?? undefined,
      seed: b.seed ?? undefined, stop: stopList(b.stop), user: req.user!.name, endpoint: '/v1/completions',
    };
    if (!b.stream) {
      const a = await answer(d, { ...common, signal: clientGone(reply) });
      reply.header('X-Fedlora-Model-Version', a.modelVersion);
      return {
        id: a.id, object: 'text_completion', created: a.created, model: modelName, system_fingerprint: `fedlora-${a.modelVersion}`,
        choices: [{ index: 0, text: a.content, logprobs: null, finish_reason: finishOf(a) }], usage: usageOf(a), fedlora: fedloraOf(a),
      };
    }
    return streamed(reply, (signal, chunk) => answer(d, { ...common, signal }, {
      onStart: (m) => chunk(m, { text: '' }),
      onContent: (t) => chunk(null, { text: t }),
    }), (a, send) => {
      send(chunkBody(a, { object: 'text_completion', choices: [{ index: 0, text: '', logprobs: null, finish_reason: finishOf(a) }], fedlora: fedloraOf(a) }));
      if (b.stream_options?.include_usage) send(chunkBody(a, { object: 'text_completion', choices: [], usage: usageOf(a) }));
    }, (m, delta) => chunkBody(m, { object: 'text_completion', choices: [{ index: 0, ...delta, logprobs: null, finish_reason: null }] }));
  });

  function chunkBody(m: AnswerMeta, rest: Record<string, unknown>) {
    return { id: m.id, created: m.created, model: modelName, system_fingerprint: `fedlora-${m.modelVersion}`, ...rest };
  }

  /** Run an answer as a stream. Errors before the first chunk are plain OpenAI error replies
   *  (429 with Retry-After, 400 for an over-long prompt); after it, an error event ends the stream. */
  async function streamed(
    reply: import('fastify').FastifyReply,
    run: (signal: AbortSignal, chunk: (meta: AnswerMeta | null, delta: Record<string, unknown>) => void) => Promise<Answer>,
    finish: (a: Answer, send: (o: unknown) => void) => void,
    deltaChunk: (m: AnswerMeta, delta: Record<string, unknown>) => unknown,
  ) {
    const early = clientGone(reply);
    let sse: ReturnType<typeof openSse> | null = null;
    let meta: AnswerMeta | null = null;
    const ac = new AbortController();
    early.addEventListener('abort', () => ac.abort(early.reason), { once: true });
    try {
      const a = await run(ac.signal, (m, delta) => {
        if (m) {
          meta = m;
          sse = openSse(reply, { 'X-Fedlora-Model-Version': m.modelVersion });
          sse.signal.addEventListener('abort', () => ac.abort(sse!.signal.reason), { once: true });
        }
        sse!.send(deltaChunk(meta!, delta));
      });
      if (sse) {
        finish(a, (x) => sse!.send(x));
        (sse as ReturnType<typeof openSse>).end();
      }
      return reply;
    } catch (e) {
      if (!sse) throw e;
      const s = sse as ReturnType<typeof openSse>;
      s.send(openaiErrorBody(toFedloraError(e)));
      s.end();
      return reply;
    }
  }
};
