// Strategy state (server-optimiser moments, adaptive clip norm) survives restarts as JSON in the
// published round's row: Float32Arrays as base64, numbers as they are.
import type { AggregateResult } from '../strategies/types.ts';

type StrategyState = AggregateResult['state'];

export function encodeState(state: StrategyState): string {
  const o: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(state)) o[k] = typeof v === 'number' ? v : { f32: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64') };
  return JSON.stringify(o);
}

export function decodeState(text: string | null): StrategyState {
  if (!text) return {};
  const o = JSON.parse(text) as Record<string, number | { f32: string }>;
  const out: StrategyState = {};
  for (const [k, v] of Object.entries(o)) {
    if (typeof v === 'number') out[k] = v;
    else {
      const b = Buffer.from(v.f32, 'base64');
      out[k] = new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
    }
  }
  return out;
}
