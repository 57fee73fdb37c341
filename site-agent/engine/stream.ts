// Text streaming on top of token generation: decoded text as it grows (complete characters
// only), text stop sequences, cancellation. A server answering many requests holds one loaded
// model; each call here has its own key/value cache.

import type { Tokenizer } from './tokenizer.ts';
import { generateTokens, type FinishReason } from './infer.ts';
import type { AdapterWeights, LoraConfig } from '../../shared/lora/types.ts';
import type { Checkpoint, Device } from './types.ts';

export interface StreamOptions {
  maxNewTokens: number;
  /** 0 = greedy. */
  temperature?: number;
  topP?: number;
  seed?: number;
  /** Text stop sequences: generation ends before the first one, which is not part of the text. */
  stop?: string[];
  /** Cancels before the next token (finish 'cancelled'). */
  signal?: AbortSignal;
  /** Each new piece of text as soon as it is certain (not a possible start of a stop sequence). */
  onText?: (delta: string) => void;
}

export interface StreamResult {
  text: string;
  promptTokens: number;
  completionTokens: number;
  /** 'stop': an end-of-sequence token or a stop sequence; 'length': maxNewTokens reached. */
  finish: 'stop' | 'length' | 'cancelled';
}

/** Length of the longest suffix of `text` that is a proper prefix of one of `stops`. */
export function pendingStopPrefix(text: string, stops: string[]): number {
  let best = 0;
  for (const s of stops) {
    for (let n = Math.min(s.length - 1, text.length); n > best; n--) {
      if (text.endsWith(s.slice(0, n))) {
        best = n;
        break;
      }
    }
  }
  return best;
}

export async function streamGenerate(
  ckpt: Checkpoint, tokenizer: Tokenizer, adapter: AdapterWeights | null, lora: LoraConfig | null, promptIds: number[],
  o: StreamOptions & { device?: Device; threads?: number },
): Promise<StreamResult> {
  const stops = (o.stop ?? []).filter((s) => s.length > 0);
  const ids: number[] = [];
  let sent = 0; // characters of the final text already given to onText
  let text = '';
  let stoppedAt = -1;
  const flush = (upTo: number): void => {
    if (upTo > sent) {
      o.onText?.(text.slice(sent, upTo));
      sent = upTo;
    }
  };
  const r = await generateTokens(ckpt, adapter, lora, promptIds, {
    device: o.device, threads: o.threads, maxNewTokens: o.maxNewTokens, temperature: o.temperature, topP: o.topP, seed: o.seed, signal: o.signal,
    onToken: (id) => {
      ids.push(id);
      text = tokenizer.decode(ids, { skipSpecialTokens: true });
      let hit = -1;
      for (const s of stops) {
        const at = text.indexOf(s, Math.max(0, sent - s.length));
        if (at >= 0 && (hit < 0 || at < hit)) hit = at;
      }
      if (hit >= 0) {
        stoppedAt = hit;
        flush(hit);
        return false;
      }
      // An incomplete UTF-8 sequence decodes to U+FFFD: hold it back until the next token.
      let safe = text.endsWith('\uFFFD') ? text.length - 1 : text.length;
      safe -= pendingStopPrefix(text.slice(0, safe), stops);
      flush(safe);
      return true;
    },
  });
  const final = stoppedAt >= 0 ? text.slice(0, stoppedAt) : text;
  if (r.finish !== 'aborted') flush(final.length);
  const finish: Record<FinishReason, StreamResult['finish']> = { eos: 'stop', stopped: 'stop', length: 'length', aborted: 'cancelled' };
  return { text: r.finish === 'aborted' ? final.slice(0, sent) : final, promptTokens: promptIds.length, completionTokens: r.tokens.length, finish: finish[r.finish] };
}
