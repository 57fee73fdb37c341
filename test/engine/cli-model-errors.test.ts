// Bad input to the engine commands, run in-process through the real command tree
// (cli/main.ts's buildProgram; main() prints `error CODE: message` and exits 2 for these):
// each fails with a FEDLORA_ERR code and a message naming what is wrong and where.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildProgram } from '../../cli/main.ts';
import { isFedloraError } from '../../shared/errors.ts';
import { writeTinyModel } from '../../site-agent/engine/checkpoint/tiny.ts';
import { releaseInferenceSessions } from '../../site-agent/engine/infer.ts';
import { writePeftAdapter } from '../../shared/lora/peft.ts';
import { initLoraAdapter } from '../../shared/lora/init.ts';
import { digitJsonl, LORA, tempDir, tinyModel } from './train-fixtures.ts';
import { join } from 'node:path';

const tmp = tempDir('cli-errors');
const p = (...s: string[]) => join(tmp.dir, ...s);
afterAll(async () => {
  await releaseInferenceSessions();
  tmp.cleanup();
});

async function cliError(...args: string[]): Promise<string> {
  const prog = buildProgram();
  prog.exitOverride();
  for (const c of prog.commands) c.exitOverride();
  try {
    await prog.parseAsync(['node', 'fedlora', ...args]);
  } catch (e) {
    if (isFedloraError(e)) return `${e.code}: ${e.message}`;
    throw e;
  }
  throw new Error(`fedlora ${args.join(' ')} did not fail`);
}

beforeAll(() => {
  const ckpt = tinyModel(p('model'));
  digitJsonl(p('data.jsonl'), 10, 1);
  digitJsonl(p('bad.jsonl'), 10, 2, { line: 4, text: '{"prompt": "count from 1:", ' });
  // an adapter of r=4 for this model (hidden 64), and a model with hidden 32 it does not fit
  writePeftAdapter(p('ad'), initLoraAdapter(ckpt.config, LORA), { ...LORA, baseModel: 'tiny' });
  writeTinyModel({ arch: 'llama', out: p('m32'), seed: 1, layers: 2, hidden: 32, heads: 2, kvHeads: 1 });
});

const train = (...more: string[]) => ['train', '--model', p('model'), '--data', p('data.jsonl'), '--out', p('x'), ...more];

describe('engine CLI errors', () => {
  it('missing files', async () => {
    expect(await cliError('train', '--model', p('missing'), '--data', p('data.jsonl'), '--out', p('x'))).toMatch(/^FEDLORA_ERR_MODEL_FILES: --model .*missing: folder does not exist/);
    expect(await cliError('model', 'score', '--model', tmp.dir, '--ids', '1,2')).toMatch(/^FEDLORA_ERR_MODEL_FILES: --model .*: no config\.json/);
    expect(await cliError('train', '--model', p('model'), '--data', p('none.jsonl'), '--out', p('x'))).toMatch(/^FEDLORA_ERR_NOT_FOUND: --data .*none\.jsonl: file does not exist/);
    expect(await cliError('model', 'score', '--model', p('model'), '--adapter', p('no-adapter'), '--ids', '1,2')).toMatch(/^FEDLORA_ERR_ADAPTER: .*no-adapter/);
  });

  it('a malformed JSONL line is reported with its line number', async () => {
    expect(await cliError('train', '--model', p('model'), '--data', p('bad.jsonl'), '--out', p('x'), '--steps', '1')).toMatch(/^FEDLORA_ERR_DATA_LINE: .*bad\.jsonl:4: /);
  });

  it('bad flags name the flag and the value', async () => {
    expect(await cliError(...train('--lr', 'fast'))).toBe('FEDLORA_ERR_INVALID_ARGUMENT: --lr "fast": expected a number');
    expect(await cliError(...train('--steps', '2.5'))).toMatch(/--steps "2\.5": expected an integer/);
    expect(await cliError(...train('--steps', '3', '--epochs', '1'))).toMatch(/give --steps or --epochs, not both/);
    expect(await cliError(...train('--targets', 'q_proj,qq_proj'))).toMatch(/--targets: "qq_proj" is not one of q_proj, k_proj/);
    expect(await cliError(...train('--optimizer', 'lion'))).toMatch(/--optimizer "lion": expected one of adamw, sgd/);
    expect(await cliError(...train('--lora-dropout', '1.5'))).toMatch(/--lora-dropout 1\.5: must be < 1/);
    expect(await cliError(...train('--device', 'tpu'))).toMatch(/--device "tpu": expected one of cpu, cuda, webgpu/);
    expect(await cliError('model', 'init-tiny', '--arch', 'gpt2', '--out', p('y'))).toMatch(/--arch "gpt2": expected one of llama, qwen2/);
    expect(await cliError('model', 'score', '--model', p('model'), '--ids', '1,999999')).toMatch(/--ids item 2 "999999": expected a token id in \[0, 280\)/);
    expect(await cliError('model', 'score', '--model', p('model'))).toMatch(/give exactly one of --text or --ids/);
    expect(await cliError('model', 'init-random', '--like', 'llama-70b', '--out', p('r'))).toMatch(/^FEDLORA_ERR_INVALID_ARGUMENT: --like "llama-70b": unknown model; known: deepseek-r1-distill-qwen-1\.5b, /);
    expect(await cliError('model', 'init-random', '--like', 'deepseek-coder-1.3b', '--max-shard-size', 'big', '--out', p('r'))).toMatch(/--max-shard-size "big": expected a size such as 5GB/);
    expect(await cliError('model', 'init-random', '--like', 'deepseek-coder-1.3b', '--layers', '25', '--out', p('r'))).toMatch(/--layers 25: must be an integer in \[1, 24\]/);
  });

  it('adapters of the wrong shape', async () => {
    expect(await cliError('model', 'score', '--model', p('m32'), '--adapter', p('ad'), '--ids', '1,2,3'))
      .toMatch(/^FEDLORA_ERR_SHAPE: .*ad: adapter tensor "base_model\.model\.model\.layers\.0\.self_attn\.q_proj\.lora_A\.weight" has shape \[4,64\], expected \[4,32\]/);
    expect(await cliError(...train('--steps', '1', '--init-adapter', p('ad'), '--rank', '8')))
      .toMatch(/^FEDLORA_ERR_SHAPE: initial adapter: tensor ".*lora_A\.weight" has shape \[4,64\], expected \[8,64\]/);
    expect(await cliError('model', 'merge', '--model', p('m32'), '--adapter', p('ad'), '--out', p('merged')))
      .toMatch(/^FEDLORA_ERR_SHAPE: .*has shape \[4,64\], expected \[4,32\]/);
  });
});
