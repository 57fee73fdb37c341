// The GPU backend: a vLLM OpenAI-compatible server does the generation, while everything a site
// needs stays in front of it in this process (auth, retrieval, prompt, disclaimer, audit, gate).
// The prompt is rendered and tokenised here with the model's own tokenizer and sent to vLLM's
// /v1/completions as token ids, so both backends see the same tokens. The approved adapter is
// loaded into vLLM through its LoRA API (/v1/load_lora_adapter, /v1/unload_lora_adapter; vLLM
// must run with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True) and chosen per request
// by its name in `model`.
import { fail } from '../../../shared/errors.ts';
import { loadTokenizer } from '../../engine/index.ts';
import type { ServingVersion } from '../gate/serving.ts';
import type { Generated, GenerationBackend } from './types.ts';

export const loraNameOf = (v: ServingVersion): string => `fedlora-${(v.jobId ?? 'adapter').replace(/[^A-Za-z0-9._-]/g, '_')}-v${v.version}`;

export async function createVllmBackend(o: { url: string; modelDir: string }): Promise<GenerationBackend> {
  const base = o.url.replace(/\/+$/, '');
  const tok = loadTokenizer(o.modelDir);
  const call = async (path: string, init: RequestInit = {}): Promise<Response> => {
    try {
      return await fetch(`${base}${path}`, { ...init, headers: { 'content-type': 'application/json', ...(init.headers ?? {}) } });
    } catch (e) {
      if ((e as Error).name === 'AbortError') throw e;
      throw fail('FEDLORA_ERR_BACKEND', `vLLM at ${base} is not reachable (${(e as Error).message}); is it running (see deploy/README.md, "GPU sites: vLLM")?`);
    }
  };
  const models = await call('/v1/models');
  if (!models.ok) throw fail('FEDLORA_ERR_BACKEND', `vLLM at ${base}: GET /v1/models answered ${models.status}`);
  const listed = ((await models.json()) as { data?: { id: string; parent?: string | null }[] }).data ?? [];
  const baseModel = listed.find((m) => !m.parent)?.id;
  if (!baseModel) throw fail('FEDLORA_ERR_BACKEND', `vLLM at ${base} lists no base model in GET /v1/models`);
  let current = baseModel;
  let loaded: string | null = null;

  const unload = async (name: string) => {
    const r = await call('/v1/unload_lora_adapter', { method: 'POST', body: JSON.stringify({ lora_name: name }) });
    if (!r.ok && r.status !== 404) throw fail('FEDLORA_ERR_BACKEND', `vLLM refused to unload ${name}: ${r.status} ${(await r.text()).slice(0, 300)}`);
  };

  return {
    kind: 'vllm',
    chatPrompt(messages) {
      const text = tok.applyChatTemplate(messages, { addGenerationPrompt: true });
      return { text, ids: tok.encode(text, { addSpecialTokens: false }) };
    },
    encode: (text) => tok.encode(text),
    async generate(promptIds, p): Promise<Generated> {
      const r = await call('/v1/completions', {
        method: 'POST', signal: p.signal,
        body: JSON.stringify({
          model: current, prompt: promptIds, max_tokens: p.maxTokens, temperature: p.temperature, top_p: p.topP,
          ...(p.seed !== undefined ? { seed: p.seed } : {}), ...(p.stop.length ? { stop: p.stop } : {}),
          stream: true, stream_options: { include_usage: true },
        }),
      }).catch((e) => {
        if (p.signal.aborted) return null;
        throw e;
      });
      if (r === null) return { text: '', completionTokens: 0, finish: 'cancelled' };
      if (!r.ok || !r.body) throw fail('FEDLORA_ERR_BACKEND', `vLLM /v1/completions answered ${r.status}: ${(await r.text()).slice(0, 300)}`);
      let text = '';
      let completionTokens = 0;
      let finish: Generated['finish'] = 'stop';
      let buf = '';
      try {
        for await (const piece of r.body.pipeThrough(new TextDecoderStream())) {
          buf += piece;
          let nl: number;
          while ((nl = buf.indexOf('\n')) >= 0) {
            const line = buf.slice(0, nl).trim();
            buf = buf.slice(nl + 1);
            if (!line.startsWith('data:')) continue;
            const data = line.slice(5).trim();
            if (data === '[DONE]') continue;
            const chunk = JSON.parse(data) as { choices?: { text?: string; finish_reason?: string | null }[]; usage?: { completion_tokens?: number }; error?: { message?: string } };
            if (chunk.error) throw fail('FEDLORA_ERR_BACKEND', `vLLM: ${chunk.error.message ?? 'error in stream'}`);
            const c = chunk.choices?.[0];
            if (c?.text) {
              text += c.text;
              p.onText(c.text);
            }
            if (c?.finish_reason) finish = c.finish_reason === 'length' ? 'length' : 'stop';
            if (chunk.usage?.completion_tokens !== undefined) completionTokens = chunk.usage.completion_tokens;
          }
        }
      } catch (e) {
        if (p.signal.aborted) return { text, completionTokens, finish: 'cancelled' };
        throw e;
      }
      return { text, completionTokens, finish };
    },
    async useVersion(v) {
      if (v.dir === null) {
        current = baseModel;
      } else {
        const name = loraNameOf(v);
        if (name !== loaded) {
          const r = await call('/v1/load_lora_adapter', { method: 'POST', body: JSON.stringify({ lora_name: name, lora_path: v.dir }) });
          const body = await r.text();
          if (!r.ok && !/already (been )?loaded/i.test(body)) throw fail('FEDLORA_ERR_BACKEND', `vLLM refused to load ${v.label} from ${v.dir}: ${r.status} ${body.slice(0, 300)}`);
        }
        current = name;
      }
      if (loaded !== null && loaded !== current) await unload(loaded);
      loaded = current === baseModel ? null : current;
    },
    async close() {
      // closing goes on either way; a failed unload only leaves the adapter loaded in vLLM, said here
      const name = loaded;
      if (name !== null) await unload(name).catch((e: Error) => process.emitWarning(`vLLM adapter ${name} was not unloaded at close: ${e.message}`, 'FedloraBackendWarning'));
    },
  };
}
