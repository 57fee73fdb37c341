// Secure aggregation: stage functions (protocol.ts), Shamir sharing, quantisation, mask PRG.
export * from './protocol.ts';
export { quantize, dequantizeSum, levelsFor, clipL2InPlace } from './quantize.ts';
export { expandMask } from './prg.ts';
