// JSONL training data -> Examples, streamed line by line. Nothing is dropped silently: invalid
// lines fail the load (all of them listed) unless `skipInvalid` is set, in which case the result
// says how many and which were skipped; over-long examples are truncated (or rejected) and counted.

import { createReadStream, existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fail } from '../../../shared/errors.ts';
import type { Example } from '../types.ts';
import type { Tokenizer } from '../tokenizer.ts';
import { IGNORE_INDEX, RecordError, recordToExample, type RecordFormat } from './examples.ts';

export interface LoadOptions {
  maxSeqLen: number;
  format?: RecordFormat;
  /** Skip invalid lines (and report them) instead of failing the whole load. */
  skipInvalid?: boolean;
  /** Over-long examples: 'truncate' (keep the first maxSeqLen tokens; default) or 'error'. */
  overflow?: 'truncate' | 'error';
  /** Upper bound for pre-tokenized ids (default: the tokenizer's largest id + 1). */
  vocabSize?: number;
}

export interface LineProblem {
  line: number;
  problem: string;
}

export interface LoadStats {
  file: string;
  lines: number;
  blankLines: number;
  examples: number;
  skipped: LineProblem[];
  /** Lines whose example was cut to maxSeqLen. */
  truncated: number[];
  /** Lines that had no loss-bearing token left after truncation (dropped, listed here). */
  droppedNoTargets: number[];
  tokens: number;
  /** Tokens with a label != -100. */
  targetTokens: number;
}

export interface LoadResult {
  examples: Example[];
  /** 1-based source line of each example. */
  sourceLines: number[];
  stats: LoadStats;
}

const MAX_LISTED = 20;

function listProblems(file: string, problems: LineProblem[]): string {
  const shown = problems.slice(0, MAX_LISTED).map((p) => `${file}:${p.line}: ${p.problem}`).join('; ');
  return problems.length > MAX_LISTED ? `${shown}; ... and ${problems.length - MAX_LISTED} more` : shown;
}

/** Stream a JSONL file of chat / prompt-completion / pre-tokenized records into Examples. */
export async function loadJsonlExamples(file: string, tok: Tokenizer, opts: LoadOptions): Promise<LoadResult> {
  return loadExamplesFromLines(readLines(file), file, tok, opts);
}

async function* readLines(file: string): AsyncGenerator<string> {
  if (!existsSync(file)) throw fail('FEDLORA_ERR_NOT_FOUND', `${file}: training data file does not exist`);
  const rl = createInterface({ input: createReadStream(file, { encoding: 'utf8' }), crlfDelay: Infinity });
  for await (const line of rl) yield line;
}

/** Same as loadJsonlExamples over any source of lines (`name` is used in messages). */
export async function loadExamplesFromLines(lines: AsyncIterable<string> | Iterable<string>, name: string, tok: Tokenizer, opts: LoadOptions): Promise<LoadResult> {
  if (!Number.isInteger(opts.maxSeqLen) || opts.maxSeqLen < 2) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `maxSeqLen must be an integer >= 2, got ${opts.maxSeqLen}`);
  const vocab = opts.vocabSize ?? tok.maxId + 1;
  // A tokenizer that can emit ids past the embedding table would crash (or corrupt) the graph.
  if (tok.maxId >= vocab) throw fail('FEDLORA_ERR_TOKENIZER', `the tokenizer produces ids up to ${tok.maxId}, but the model's vocab_size is ${vocab} (tokenizer and model do not belong together)`);
  const format = opts.format ?? 'auto';
  const examples: Example[] = [];
  const sourceLines: number[] = [];
  const stats: LoadStats = { file: name, lines: 0, blankLines: 0, examples: 0, skipped: [], truncated: [], droppedNoTargets: [], tokens: 0, targetTokens: 0 };
  let n = 0;
  for await (const raw of lines) {
    n++;
    const line = raw.replace(/^\uFEFF/, '');
    if (line.trim() === '') {
      stats.blankLines++;
      continue;
    }
    let ex: Example;
    try {
      let rec: unknown;
      try {
        rec = JSON.parse(line);
      } catch (e) {
        throw new RecordError(`not valid JSON (${(e as Error).message})`);
      }
      ex = recordToExample(rec, tok, format, vocab);
      if (ex.inputIds.length > opts.maxSeqLen) {
        if (opts.overflow === 'error') throw new RecordError(`${ex.inputIds.length} tokens exceed maxSeqLen ${opts.maxSeqLen}`);
        ex = { inputIds: ex.inputIds.slice(0, opts.maxSeqLen), labels: ex.labels.slice(0, opts.maxSeqLen) };
        stats.truncated.push(n);
      }
    } catch (e) {
      if (!(e instanceof RecordError)) throw e;
      stats.skipped.push({ line: n, problem: e.message });
      continue;
    }
    // labels are unshifted: position 0's label is never a target, so count from 1.
    let targets = 0;
    for (let i = 1; i < ex.labels.length; i++) if (ex.labels[i] !== IGNORE_INDEX) targets++;
    if (targets === 0) {
      stats.droppedNoTargets.push(n);
      continue;
    }
    examples.push(ex);
    sourceLines.push(n);
    stats.tokens += ex.inputIds.length;
    stats.targetTokens += targets;
  }
  stats.lines = n;
  stats.examples = examples.length;
  if (stats.skipped.length && !opts.skipInvalid) {
    throw fail('FEDLORA_ERR_DATA_LINE', `${name}: ${stats.skipped.length} invalid line(s): ${listProblems(name, stats.skipped)}`, { problems: stats.skipped });
  }
  if (examples.length === 0) {
    throw fail('FEDLORA_ERR_DATA_LINE', `${name}: no usable examples (${n} lines, ${stats.skipped.length} invalid, ${stats.droppedNoTargets.length} without loss-bearing tokens)`);
  }
  return { examples, sourceLines, stats };
}
