// Secure aggregation: stage functions (protocol.ts), Shamir sharing, quantisation, mask PRG.
export * from './protocol.ts';
export { split as shamirSplit, combine as shamirCombine, interpolate as shamirInterpolate, P as SHAMIR_PRIME, type Share } from './shamir.ts';
export { quantize, dequantizeSum, levelsFor, clipL2InPlace } from './quantize.ts';
export { expandMask } from './prg.ts';
