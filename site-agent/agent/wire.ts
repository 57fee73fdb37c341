// The site agent's view of the wire: the Federation service of proto/fedlora.proto, seen
// from the site (every call outbound). The gRPC binding lives in grpc-wire.ts; tests can
// substitute another implementation of this interface.
import type { MetricsSharingWire } from '../../shared/metrics-sharing.ts';
import type { Metric } from '../../shared/proto.ts';

export interface WireTask {
  taskId: string;
  jobId: string;
  round: number;
  kind: string; // TASK_KIND_TRAIN | TASK_KIND_EVALUATE | ...
  baseModel: { id: string; manifestSha256: string };
  lora: { r: number; alpha: number; targetModules: string[]; dropout: number; useRslora: boolean; freezeA: boolean; initSeed: number | string; /** 0 or absent: r (every site trains the job's rank). */ minSiteR?: number };
  train: {
    localSteps: number;
    localEpochs: number;
    learningRate: number;
    optimizer: string;
    batchTokens: number;
    seed: number | string;
    proxMu: number;
    weightDecay: number;
    warmupSteps: number;
    maxGradNorm: number;
    /** The share of earlier periods' records mixed into this period's new ones (0 or absent: none). */
    replayFraction?: number;
    /** The job's data period this round belongs to (0 or absent: its first rounds). */
    dataPeriod?: number;
    /** Knowledge distillation from a teacher the site resolves itself (absent or null: none). */
    distill?: { teacher: string; topK: number; temperature: number; alpha: number } | null;
  };
  globalAdapter: { jobId: string; version: number; sha256: string; sizeBytes: number | string; manifestSha256: string };
  privacy: {
    dpEnabled: boolean;
    clipNorm: number;
    noiseMultiplier: number;
    epsilonAfterRound: number;
    delta: number;
    secureAggregation: boolean;
    minSites: number;
    adaptiveClipping: boolean;
    clippedBitNoise: number;
  };
  deadlineUnixMs: number | string;
  selectedSites: number;
  aggregation: string;
  payloadKind: string;
  strategyConfig: Record<string, string>;
  evaluateBase: boolean;
  /** The job whose version this job's version 0 continues: its trained records count as earlier. */
  parentJob?: string;
  /** For CROSS_EVAL: the owners' shared local-only adapters to evaluate here. */
  peerAdapters?: { jobId: string; version: number; sha256: string; sizeBytes: number | string; manifestSha256: string }[];
  peerSites?: string[];
  /** For EXAM: the exam's name (site.yaml evaluation.exams) and loglik | generate | both. */
  exam?: string;
  examMode?: string;
}

export interface UpdateHeaderOut {
  updateId: string;
  taskId: string;
  jobId: string;
  round: number;
  baseVersion: number;
  totalBytes: number;
  sha256: string;
  chunkSize: number;
  numExamples: number;
  payloadKind: string;
  signature: Buffer;
  updateNorm: number;
  clipped: boolean;
  metadataJson: Buffer;
}

export interface SubmitResult {
  updateId: string;
  receivedBytes: number;
  complete: boolean;
  sha256: string;
  /** The chunk this (last) attempt started from: > 0 when an interrupted upload was resumed. */
  resumedFromChunk?: number;
}

export interface FetchedAdapter {
  adapterFile: string; // adapter_model.safetensors on local disk, sha256 verified
  adapterConfigJson: Buffer;
  manifestJson: Buffer;
  signature: Buffer;
}

/** A reported figure as it goes over the wire (proto Metric). */
export type MetricOut = Metric;

export interface FederationWire {
  heartbeat(req: { agentVersion: string; state: string; currentTaskId: string; trainingTokensPerS: number; shareSiteMetrics?: MetricsSharingWire; dataRevision?: number }): Promise<{ serverTimeUnixMs: number; renewCertificate: boolean }>;
  /** Resolves when the server ends the stream; rejects on a transport error. */
  streamTasks(onTask: (t: WireTask) => void, signal: AbortSignal): Promise<void>;
  declineTask(taskId: string, reason: string, code: string): Promise<void>;
  fetchAdapter(req: { jobId: string; version: number; ownerSite?: string }, outDir: string): Promise<FetchedAdapter>;
  submitUpdate(header: UpdateHeaderOut, file: string): Promise<SubmitResult>;
  reportMetrics(r: { taskId: string; jobId: string; round: number; phase: string; metrics: MetricOut[] }): Promise<void>;
  /** Renew the site certificate (new key + CSR) if little of its validity is left; the new
   *  certificate is used from the next connection on. */
  renewCertificate(): Promise<{ renewed: boolean; notAfterUnixMs: number }>;
  /** One secure-aggregation exchange (stage payloads are JSON, see shared/secagg). */
  secAgg(m: { jobId: string; round: number; stage: string; payload: Buffer }): Promise<{ stage: string; payload: Buffer; ready: boolean }>;
  close(): void;
}
