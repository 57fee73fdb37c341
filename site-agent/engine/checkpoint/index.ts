// Hugging Face checkpoints: read (headers only), manifest hashing, tiny real-format test models.
export { normalizeConfig, expectedTensors, detectArch } from './config.ts';
export { readCheckpoint, computeModelManifest, computeModelManifestAsync, listWeightFiles, readJsonFile, type ReadCheckpointOptions } from './read.ts';
export { sha256File, sha256FileAsync, type ModelManifest, type ManifestFile } from './manifest.ts';
export { writeTinyModel, seededNormal, type TinyModelOptions, type TinyModelInfo } from './tiny.ts';
export { buildByteTokenizer, deepseekTokenizerPaths, deepseekChatTemplate, DEEPSEEK_SPECIALS } from './byte-tokenizer.ts';
