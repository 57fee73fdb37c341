// FedIT (Zhang et al. 2024): A and B averaged separately — plain FedAvg over the flat adapter.
// Not exact: mean(B) mean(A) != mean(B A) in general (test/strategies/lora.test.ts shows a case).
import type { Strategy } from './types.ts';
import { createFedAvg, type FedAvgOptions } from './fedavg.ts';

export function createFedIt(opts: FedAvgOptions = {}): Strategy {
  return createFedAvg(opts, 'fedit');
}
