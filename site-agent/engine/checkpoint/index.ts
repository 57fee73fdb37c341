// Hugging Face checkpoints: read (headers only), manifest hashing, tiny real-format test models.
export { expectedTensors } from './expected-tensors.ts';
export { readCheckpoint, computeModelManifest, computeModelManifestAsync, listWeightFiles, type ReadCheckpointOptions } from './read.ts';
export type { ModelManifest, ManifestFile } from './manifest.ts';
export { writeTinyModel, seededNormal, type TinyModelOptions, type TinyModelInfo } from './tiny.ts';
export { buildByteTokenizer, deepseekTokenizerPaths } from './byte-tokenizer.ts';
