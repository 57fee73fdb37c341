// Public surface of the aggregation strategies (the coordinator imports from here).
export type { Strategy, UpdateRef, RoundContext, AggregateResult, RoundInfo, Candidate, RoundConfig, RoundPlan, RoundSampling } from './types.ts';
export { createStrategy, parseAggregationSpec, AggregationSpecSchema, type AggregationSpec, type CreateStrategyOptions, type JobDpSettings } from './registry.ts';
export { createFedAvg, createFedProx, weightedMean } from './fedavg.ts';
export { createFedOpt } from './fedopt.ts';
export { createMedian, createTrimmedMean, createNormBound, createMultiKrum } from './robust.ts';
export { createDpStrategy, splitNoiseMultiplier, type DpOptions, type AdaptiveClipOptions } from './dp.ts';
export { poissonSample, seededSelect, seededOnlineSubset, everyOnline, fixedRoundConfig, type SiteSelector } from './selection.ts';
export { createFedIt } from './lora-fedit.ts';
export { createFfa, bRanges } from './lora-ffa.ts';
export { createLoraSvd } from './lora-svd.ts';
export { loraPairs } from '../../shared/lora/pairs.ts';
export { aggregateSecureSum, packTrainable, unpackTrainable } from './secure.ts';
export type { SecureSumStrategy } from './types.ts';
