// The built-in backend: the engine (ONNX Runtime) with the base model loaded once; switching
// adapter versions keeps the base model and its compiled sessions.
import { loadModel, scoreChoices, type LoadedModel } from '../../engine/index.ts';
import type { Device } from '../../engine/index.ts';
import type { GenerationBackend } from './types.ts';

export async function createEngineBackend(o: { modelDir: string; device: Device; threads?: number }): Promise<GenerationBackend> {
  const base = await loadModel(o.modelDir, { device: o.device, threads: o.threads });
  let current: LoadedModel = base;
  return {
    kind: 'engine',
    chatPrompt(messages) {
      const text = base.chatPromptText(messages);
      return { text, ids: base.tokenizer.encode(text, { addSpecialTokens: false }) };
    },
    encode: (text) => base.tokenizer.encode(text),
    async generate(promptIds, p) {
      const r = await current.stream(promptIds, { maxNewTokens: p.maxTokens, temperature: p.temperature, topP: p.topP, seed: p.seed, stop: p.stop, signal: p.signal, onText: p.onText });
      return { text: r.text, completionTokens: r.completionTokens, finish: r.finish };
    },
    async scoreChoices(messages, answerPrefix, choices) {
      const tok = base.tokenizer;
      const prompt = tok.encode(base.chatPromptText(messages) + answerPrefix, { addSpecialTokens: false });
      const m = current;
      return scoreChoices(m.checkpoint, m.adapter, m.lora, prompt, choices.map((c) => tok.encode(c, { addSpecialTokens: false })), { device: o.device, threads: o.threads, normalize: true });
    },
    async useVersion(v) {
      current = base.withAdapter(v.dir);
    },
    close: () => base.release(),
  };
}
