// Version 0 of a job's adapter, exactly as every site initialises it (shared/lora/init.ts's initLoraAdapter:
// PEFT's kaiming_uniform(a=sqrt(5)) for A from a stream derived from (init_seed, key); B = 0).
// Using the sites' own generator matters for freeze_a: A is never sent, so the coordinator's
// version 0 A must be bit-identical to what each site regenerates.
import { flatten, type AdapterLayout } from '../../shared/tensors.ts';
import { initLoraAdapter } from '../../shared/lora/init.ts';
import type { LoraTarget, ModelConfig } from '../../shared/lora/types.ts';
import type { JobSpec } from '../jobs/spec.ts';

export function initialAdapterFlat(model: ModelConfig, spec: JobSpec, layout: AdapterLayout): Float32Array {
  const w = initLoraAdapter(model, {
    r: spec.lora.r, alpha: spec.lora.alpha, targets: spec.lora.target_modules as LoraTarget[], dropout: spec.lora.dropout,
    useRslora: spec.lora.use_rslora, freezeA: spec.lora.freeze_a, initSeed: spec.lora.init_seed,
  });
  return flatten(w, layout);
}
