// Loads proto/fedlora.proto (the source of truth) with @grpc/proto-loader and gives the
// messages TypeScript shapes. Loader options, fixed for the whole system:
//   keepCase: false  -> fields are camelCase in JS (update_id -> updateId, csr_pem -> csrPem)
//   longs: Number    -> int64/uint64 are JS numbers (sizes, offsets, unix ms; seeds must stay
//                       below 2^53)
//   enums: String    -> TaskKind values are their names, e.g. 'TASK_KIND_TRAIN'
//   bytes: Buffer    -> bytes fields are Buffers (send Buffer or Uint8Array)
//   defaults: true   -> absent scalars read as 0 / '' / false / empty Buffer / []; absent
//                       message fields read as null
//   oneofs: true     -> a oneof sets a virtual field naming the member that is present:
//                       UpdateMessage.part = 'header' | 'chunk' | 'trailer',
//                       AdapterChunk.part = 'header' | 'chunk'
//   arrays/objects: true (repeated -> [], map -> {})
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { MetricsSharingWire } from './metrics-sharing.ts';

const PROTO_PATH = join(dirname(fileURLToPath(import.meta.url)), '..', 'proto', 'fedlora.proto');

const PROTO_LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: Number,
  enums: String,
  bytes: Buffer,
  defaults: true,
  oneofs: true,
  arrays: true,
  objects: true,
};

/** Message size cap for both sides: chunks are at most 4 MiB + framing. */
export const MAX_MESSAGE_BYTES = 8 * 1024 * 1024;

type Bytes = Buffer | Uint8Array;

// ---- Enrollment -----------------------------------------------------------------------
export interface EnrollRequest { token: string; csrPem: Bytes; agentVersion: string }
export interface EnrollResponse { siteId: string; certificatePem: Bytes; caCertificatePem: Bytes; federationEndpoint: string; notAfterUnixMs: number }

// ---- Federation -----------------------------------------------------------------------
export interface Ack { ok: boolean; message: string }
export interface HeartbeatRequest { agentVersion: string; state: string; currentTaskId: string; trainingTokensPerS: number; shareSiteMetrics?: MetricsSharingWire; dataRevision?: number }
export interface HeartbeatResponse { serverTimeUnixMs: number; renewCertificate: boolean; heartbeatIntervalMs: number }
export interface RenewRequest { csrPem: Bytes }
export interface RenewResponse { certificatePem: Bytes; notAfterUnixMs: number }
export interface TaskStreamRequest { agentVersion: string; maxParallelTasks: number }
export type TaskKind = 'TASK_KIND_UNSPECIFIED' | 'TASK_KIND_TRAIN' | 'TASK_KIND_EVALUATE' | 'TASK_KIND_CROSS_EVAL' | 'TASK_KIND_UPLOAD_LOCAL' | 'TASK_KIND_CANCEL' | 'TASK_KIND_EXAM';
export interface BaseModel { id: string; manifestSha256: string }
export interface LoraSpec { r: number; alpha: number; targetModules: string[]; dropout: number; useRslora: boolean; freezeA: boolean; initSeed: number; minSiteR?: number }
export interface TrainSpec {
  localSteps: number; localEpochs: number; learningRate: number; optimizer: string; batchTokens: number; seed: number;
  proxMu: number; weightDecay: number; warmupSteps: number; maxGradNorm: number; replayFraction?: number; dataPeriod?: number;
  distill?: DistillSpec | null;
}
export interface DistillSpec { teacher: string; topK: number; temperature: number; alpha: number }
export interface AdapterRef { jobId: string; version: number; sha256: string; sizeBytes: number; manifestSha256: string }
export interface PrivacySpec {
  dpEnabled: boolean; clipNorm: number; noiseMultiplier: number; epsilonAfterRound: number; delta: number;
  secureAggregation: boolean; minSites: number; adaptiveClipping: boolean; clippedBitNoise: number;
}
export interface Task {
  taskId: string; jobId: string; round: number; kind: TaskKind; baseModel: BaseModel | null; lora: LoraSpec | null;
  train: TrainSpec | null; globalAdapter: AdapterRef | null; privacy: PrivacySpec | null; deadlineUnixMs: number;
  selectedSites: number; aggregation: string; payloadKind: string; strategyConfig: Record<string, string>;
  peerAdapters: AdapterRef[]; peerSites: string[]; evaluateBase: boolean; parentJob?: string;
  /** EXAM tasks: the exam's name and how to score it (loglik | generate | both). */
  exam?: string; examMode?: string;
}
export interface DeclineRequest { taskId: string; reason: string; code: string }
export interface FetchAdapterRequest { jobId: string; version: number; offset: number; ownerSite: string }
export interface AdapterHeader {
  ref: AdapterRef | null; adapterConfigJson: Bytes; manifestJson: Bytes; signature: Bytes; chunkSize: number; totalBytes: number;
  signerCertificatePem: Bytes;
}
export interface Chunk { index: number; offset: number; data: Bytes; sha256: string }
export type AdapterChunk =
  | { part?: 'header'; header: AdapterHeader; chunk?: null }
  | { part?: 'chunk'; chunk: Chunk; header?: null };
export interface UpdateHeader {
  updateId: string; taskId: string; jobId: string; round: number; baseVersion: number; totalBytes: number; sha256: string;
  chunkSize: number; numExamples: number; payloadKind: string; signature: Bytes; resumeFromChunk: number;
  updateNorm: number; clipped: boolean; metadataJson: Bytes;
}
export interface UpdateTrailer { chunks: number }
export type UpdateMessage =
  | { part?: 'header'; header: UpdateHeader }
  | { part?: 'chunk'; chunk: Chunk }
  | { part?: 'trailer'; trailer: UpdateTrailer };
export interface SubmitUpdateResponse { updateId: string; receivedBytes: number; receivedChunks: number; complete: boolean; sha256: string }
export interface UploadStatusRequest { updateId: string }
export interface UploadStatusResponse { known: boolean; receivedChunks: number; receivedBytes: number; complete: boolean }
export interface Interval { low: number; high: number; resamples: number }
export interface Metric {
  kind: string; name: string; value: number; count: number; modelOwner: string; adapterVersion: number;
  /** Absent (null) for counts and rates; optional when sending. */
  ci?: Interval | null; subset?: string; bootstrap?: number[]; evalSet?: string;
}
export interface MetricsReport { taskId: string; jobId: string; round: number; metrics: Metric[]; phase: string }
/** MetricsReport.phase of the empty report a site sends when it has finished an EVALUATE or
 *  CROSS_EVAL task (the coordinator marks that side task done and stops re-sending it). */
export const TASK_DONE_PHASE = 'task_done';
export interface SecAggMessage { jobId: string; round: number; stage: string; payload: Bytes }
export interface SecAggReply { stage: string; payload: Bytes; ready: boolean }

// ---- service handler / client shapes ------------------------------------------------------
type Unary<Req, Res> = grpc.handleUnaryCall<Req, Res>;

/** What the coordinator implements for `Federation` (pass to server.addService). */
export interface FederationHandlers extends grpc.UntypedServiceImplementation {
  heartbeat: Unary<HeartbeatRequest, HeartbeatResponse>;
  renewCertificate: Unary<RenewRequest, RenewResponse>;
  streamTasks: grpc.handleServerStreamingCall<TaskStreamRequest, Task>;
  declineTask: Unary<DeclineRequest, Ack>;
  fetchAdapter: grpc.handleServerStreamingCall<FetchAdapterRequest, AdapterChunk>;
  submitUpdate: grpc.handleClientStreamingCall<UpdateMessage, SubmitUpdateResponse>;
  getUploadStatus: Unary<UploadStatusRequest, UploadStatusResponse>;
  reportMetrics: Unary<MetricsReport, Ack>;
  secAgg: Unary<SecAggMessage, SecAggReply>;
}

export interface EnrollmentHandlers extends grpc.UntypedServiceImplementation {
  enroll: Unary<EnrollRequest, EnrollResponse>;
}

type UnaryClientMethod<Req, Res> = (
  req: Partial<Req>,
  metadata: grpc.Metadata,
  options: Partial<grpc.CallOptions>,
  cb: (err: grpc.ServiceError | null, res?: Res) => void,
) => grpc.ClientUnaryCall;

/** Typed Federation client (callbacks; see `unary()` below for a promise form). */
export interface FederationClient extends grpc.Client {
  heartbeat: UnaryClientMethod<HeartbeatRequest, HeartbeatResponse>;
  renewCertificate: UnaryClientMethod<RenewRequest, RenewResponse>;
  streamTasks(req: Partial<TaskStreamRequest>, metadata?: grpc.Metadata, options?: Partial<grpc.CallOptions>): grpc.ClientReadableStream<Task>;
  declineTask: UnaryClientMethod<DeclineRequest, Ack>;
  fetchAdapter(req: Partial<FetchAdapterRequest>, metadata?: grpc.Metadata, options?: Partial<grpc.CallOptions>): grpc.ClientReadableStream<AdapterChunk>;
  submitUpdate(metadata: grpc.Metadata, options: Partial<grpc.CallOptions>, cb: (err: grpc.ServiceError | null, res?: SubmitUpdateResponse) => void): grpc.ClientWritableStream<UpdateMessage>;
  getUploadStatus: UnaryClientMethod<UploadStatusRequest, UploadStatusResponse>;
  reportMetrics: UnaryClientMethod<MetricsReport, Ack>;
  secAgg: UnaryClientMethod<SecAggMessage, SecAggReply>;
}

export interface EnrollmentClient extends grpc.Client {
  enroll: UnaryClientMethod<EnrollRequest, EnrollResponse>;
}

interface Loaded {
  Federation: grpc.ServiceClientConstructor;
  Enrollment: grpc.ServiceClientConstructor;
}

let loaded: Loaded | null = null;

/** The loaded package (cached). */
function loadFedloraProto(): Loaded {
  if (loaded) return loaded;
  const def = protoLoader.loadSync(PROTO_PATH, PROTO_LOADER_OPTIONS);
  const pkg = grpc.loadPackageDefinition(def) as unknown as { fedlora: { v1: Loaded } };
  loaded = pkg.fedlora.v1;
  return loaded;
}

export function federationService(): grpc.ServiceDefinition {
  return loadFedloraProto().Federation.service;
}

export function enrollmentService(): grpc.ServiceDefinition {
  return loadFedloraProto().Enrollment.service;
}

const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
  'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
  'grpc.keepalive_time_ms': 30_000,
  'grpc.keepalive_timeout_ms': 10_000,
  // downloads of published adapters: the client's own connection and stream windows
  // (grpc-js sends the WINDOW_UPDATE itself), as the coordinator does for uploads
  'grpc-node.flow_control_window': 32 * 1024 * 1024,
};

export const SERVER_OPTIONS: grpc.ServerOptions = {
  'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
  'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
};

export function createFederationClient(address: string, creds: grpc.ChannelCredentials, options: grpc.ChannelOptions = {}): FederationClient {
  const Ctor = loadFedloraProto().Federation;
  return new Ctor(address, creds, { ...CHANNEL_OPTIONS, ...options }) as unknown as FederationClient;
}

export function createEnrollmentClient(address: string, creds: grpc.ChannelCredentials, options: grpc.ChannelOptions = {}): EnrollmentClient {
  const Ctor = loadFedloraProto().Enrollment;
  return new Ctor(address, creds, { ...CHANNEL_OPTIONS, ...options }) as unknown as EnrollmentClient;
}

/** Promise form of a unary client call: `await unary(client.heartbeat.bind(client), req)`. */
export function unary<Req, Res>(
  method: UnaryClientMethod<Req, Res>,
  req: Partial<Req>,
  options: Partial<grpc.CallOptions> = {},
  metadata: grpc.Metadata = new grpc.Metadata(),
): Promise<Res> {
  return new Promise((resolve, reject) => {
    method(req, metadata, options, (err, res) => (err ? reject(err) : resolve(res as Res)));
  });
}
