// What the assistant needs from a model server: the model's chat template and tokenizer (so the
// prompt and its length are the same whichever backend generates), streamed generation, and
// switching to another approved adapter version.
import type { ChatMessage, ChoiceScores } from '../../engine/index.ts';
import type { ServingVersion } from '../gate/serving.ts';

export interface GenerationParams {
  maxTokens: number;
  temperature: number;
  topP: number;
  seed?: number;
  stop: string[];
  signal: AbortSignal;
  onText: (delta: string) => void;
}

export interface Generated {
  text: string;
  completionTokens: number;
  finish: 'stop' | 'length' | 'cancelled';
}

export interface GenerationBackend {
  readonly kind: 'engine' | 'vllm';
  /** The chat rendered with the model's template (with the assistant's turn opened) and its ids. */
  chatPrompt(messages: ChatMessage[]): { text: string; ids: number[] };
  /** Token ids of a raw completion prompt (with the tokenizer's special tokens). */
  encode(text: string): number[];
  generate(promptIds: number[], p: GenerationParams): Promise<Generated>;
  /** Log-likelihood of each choice after the chat (with the model's template) and the start of
   *  the assistant's answer, with the version being served. The built-in engine only. */
  scoreChoices?(messages: ChatMessage[], answerPrefix: string, choices: string[]): Promise<ChoiceScores>;
  /** Serve this version from now on (null dir = the base model). */
  useVersion(v: ServingVersion): Promise<void>;
  close(): Promise<void>;
}
