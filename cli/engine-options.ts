// Options that many commands share, one wording and one default each (cli/api-options.ts does
// the same for the coordinator's HTTP API): the site dir, the engine's device, the frozen base
// weights' quantization and the adapter on top of a base model. Used with commander's addOption.
import { Option } from 'commander';

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
