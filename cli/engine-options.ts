// Options that many commands share, one wording and one default each (cli/api-options.ts does
// the same for the coordinator's HTTP API): the site dir, the engine's device, the frozen base
// weights' quantization and the adapter on top of a base model. Used with commander's addOption.
import { Command, Option } from 'commander';
import { ALL_TARGETS } from '../shared/lora/keys.ts';

export const QUANTIZE_HELP = 'frozen base weights: none (float32) | int8 | int4 (blockwise; prepared once per checkpoint and cached)';

export function defaultSiteDir(): string {
  return process.env.FEDLORA_SITE_DIR ?? '.fedlora/site';
}

/** --site-dir, default $FEDLORA_SITE_DIR or .fedlora/site. */
export const siteDirOption = (help = 'site dir'): Option => new Option('--site-dir <dir>', help).default(defaultSiteDir());

export const deviceOption = (): Option => new Option('--device <d>', 'cpu | cuda | webgpu').default('cpu');

export const quantizeOption = (): Option => new Option('--quantize <mode>', QUANTIZE_HELP).default('none');

/** --adapter: a PEFT adapter folder on top of --model. */
export const adapterOption = (): Option => new Option('--adapter <dir>', 'PEFT adapter folder (default: the base model alone)');

/** The adapter's shape, for the commands that train one (`fedlora train`, `fedlora distill`):
 *  --rank, --alpha, --targets, --init-seed. */
export const loraShapeOptions = (who = 'LoRA'): Option[] => [
  new Option('--rank <r>', `${who} rank`).default('8'),
  new Option('--alpha <a>', `${who} alpha`).default('16'),
  new Option('--targets <list>', `projections to adapt (${ALL_TARGETS.join(',')})`).default('q_proj,v_proj'),
  new Option('--init-seed <n>', 'seed of the LoRA A init (same at every site)').default('0'),
];

/** The optimisation loop both trainers share: --lr, --warmup, --steps, --epochs,
 *  --batch-tokens, --max-seq-len, --max-grad-norm. */
export const trainingLoopOptions = (): Option[] => [
  new Option('--lr <x>', 'learning rate').default('1e-4'),
  new Option('--warmup <n>', 'linear warm-up steps').default('0'),
  new Option('--steps <n>', 'optimizer steps'),
  new Option('--epochs <n>', 'epochs over the data (default 1)'),
  new Option('--batch-tokens <n>', 'tokens per optimizer step'),
  new Option('--max-seq-len <n>', 'truncate longer examples').default('512'),
  new Option('--max-grad-norm <x>', 'clip the global gradient norm (0 = off)').default('1'),
];

/** Add a group of options to a command, in order. */
export function withOptions<C extends Command>(cmd: C, options: Option[]): C {
  for (const o of options) cmd.addOption(o);
  return cmd;
}
