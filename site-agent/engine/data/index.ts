// Training data for the engine: JSONL records -> Examples -> packed fixed-shape batches.
export { loadJsonlExamples, loadExamplesFromLines, type LoadOptions, type LoadResult, type LoadStats, type LineProblem } from './jsonl.ts';
export { chatToExample, recordToExample, IGNORE_INDEX, RecordError, type RecordFormat } from './examples.ts';
export { packExamples, packExamplesWithStats, batchStats, type PackOptions, type PackStats } from './pack.ts';
