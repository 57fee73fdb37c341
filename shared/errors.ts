// One error catalogue for the whole system. Every error a user can see carries a stable
// code (FEDLORA_ERR_...), a message that names what is wrong and where, and maps to one
// gRPC status and one HTTP status, so the CLI, the HTTP API and the gRPC wire agree.
//
// Add new codes in the section of your area; keep messages specific at the throw site
// (the catalogue only fixes the code and the status mapping).

import { status as GrpcStatus } from '@grpc/grpc-js';

export interface ErrorSpec {
  grpc: GrpcStatus;
  http: number;
  summary: string;
}

export const ERRORS = {
  // ---- generic --------------------------------------------------------------------------
  FEDLORA_ERR_INTERNAL: { grpc: GrpcStatus.INTERNAL, http: 500, summary: 'internal error' },
  FEDLORA_ERR_INVALID_ARGUMENT: { grpc: GrpcStatus.INVALID_ARGUMENT, http: 400, summary: 'invalid argument' },
  FEDLORA_ERR_NOT_FOUND: { grpc: GrpcStatus.NOT_FOUND, http: 404, summary: 'not found' },
  FEDLORA_ERR_CONFIG: { grpc: GrpcStatus.INVALID_ARGUMENT, http: 400, summary: 'invalid configuration' },
  FEDLORA_ERR_IO: { grpc: GrpcStatus.INTERNAL, http: 500, summary: 'file system error' },
  FEDLORA_ERR_DISK_FULL: { grpc: GrpcStatus.RESOURCE_EXHAUSTED, http: 507, summary: 'no space left on device' },
  FEDLORA_ERR_UNAVAILABLE: { grpc: GrpcStatus.UNAVAILABLE, http: 503, summary: 'service unavailable' },
  FEDLORA_ERR_RATE_LIMITED: { grpc: GrpcStatus.RESOURCE_EXHAUSTED, http: 429, summary: 'rate limited' },

  // ---- engine: checkpoints, graph, training ----------------------------------------------
  FEDLORA_ERR_MODEL_FILES: { grpc: GrpcStatus.FAILED_PRECONDITION, http: 400, summary: 'model folder incomplete or unreadable' },
  FEDLORA_ERR_UNSUPPORTED_ARCH: { grpc: GrpcStatus.INVALID_ARGUMENT, http: 400, summary: 'unsupported model architecture' },
  FEDLORA_ERR_UNSUPPORTED_DTYPE: { grpc: GrpcStatus.INVALID_ARGUMENT, http: 400, summary: 'unsupported tensor dtype' },
  FEDLORA_ERR_SHAPE: { grpc: GrpcStatus.INVALID_ARGUMENT, http: 400, summary: 'tensor shape mismatch' },
  FEDLORA_ERR_SAFETENSORS: { grpc: GrpcStatus.INVALID_ARGUMENT, http: 400, summary: 'malformed safetensors file' },
  FEDLORA_ERR_NO_BACKWARD_RULE: { grpc: GrpcStatus.INTERNAL, http: 500, summary: 'no backward rule for op' },
  FEDLORA_ERR_EXECUTION_PROVIDER: { grpc: GrpcStatus.FAILED_PRECONDITION, http: 400, summary: 'execution provider not available' },
  FEDLORA_ERR_DATA_LINE: { grpc: GrpcStatus.INVALID_ARGUMENT, http: 400, summary: 'malformed training data line' },
  FEDLORA_ERR_ADAPTER: { grpc: GrpcStatus.INVALID_ARGUMENT, http: 400, summary: 'invalid PEFT adapter' },
  FEDLORA_ERR_TOKENIZER: { grpc: GrpcStatus.FAILED_PRECONDITION, http: 400, summary: 'tokenizer or chat template problem' },
  FEDLORA_ERR_TOKENIZER_MISMATCH: { grpc: GrpcStatus.FAILED_PRECONDITION, http: 400, summary: 'teacher and student models do not share a tokenizer' },
  FEDLORA_ERR_TRAINING: { grpc: GrpcStatus.INTERNAL, http: 500, summary: 'training failed' },
  FEDLORA_ERR_EVALUATION: { grpc: GrpcStatus.INTERNAL, http: 500, summary: 'evaluation failed' },
  FEDLORA_ERR_EXAM_ITEM: { grpc: GrpcStatus.INVALID_ARGUMENT, http: 400, summary: 'malformed exam question' },

  // ---- site data pipeline -----------------------------------------------------------------
  FEDLORA_ERR_INGEST: { grpc: GrpcStatus.INVALID_ARGUMENT, http: 400, summary: 'record could not be ingested' },
  FEDLORA_ERR_ENCODING: { grpc: GrpcStatus.INVALID_ARGUMENT, http: 400, summary: 'input is not valid UTF-8' },
  FEDLORA_ERR_FHIR: { grpc: GrpcStatus.INVALID_ARGUMENT, http: 400, summary: 'invalid FHIR resource' },
  FEDLORA_ERR_MAPPING: { grpc: GrpcStatus.INVALID_ARGUMENT, http: 400, summary: 'field mapping problem' },
  FEDLORA_ERR_DEID: { grpc: GrpcStatus.FAILED_PRECONDITION, http: 400, summary: 'de-identification required' },
  FEDLORA_ERR_DATASET: { grpc: GrpcStatus.FAILED_PRECONDITION, http: 400, summary: 'dataset cannot be built' },

  // ---- databases at rest (site.sqlite, coordinator.sqlite) ----------------------------------
  FEDLORA_ERR_DB_KEY: { grpc: GrpcStatus.FAILED_PRECONDITION, http: 500, summary: 'database key missing, unreadable or wrong' },
  FEDLORA_ERR_DB_PLAINTEXT: { grpc: GrpcStatus.FAILED_PRECONDITION, http: 500, summary: 'database is not encrypted as its configuration asks' },
  FEDLORA_ERR_DB_IN_USE: { grpc: GrpcStatus.FAILED_PRECONDITION, http: 409, summary: 'database in use by another process' },

  // ---- PKI, enrollment, authorisation -----------------------------------------------------
  FEDLORA_ERR_UNAUTHENTICATED: { grpc: GrpcStatus.UNAUTHENTICATED, http: 401, summary: 'no valid client certificate or credential' },
  FEDLORA_ERR_PERMISSION: { grpc: GrpcStatus.PERMISSION_DENIED, http: 403, summary: 'not allowed' },
  FEDLORA_ERR_ROLE: { grpc: GrpcStatus.PERMISSION_DENIED, http: 403, summary: 'the token\'s role may not do this' },
  FEDLORA_ERR_API_TOKEN_EXPIRED: { grpc: GrpcStatus.UNAUTHENTICATED, http: 401, summary: 'API token expired or revoked' },
  FEDLORA_ERR_TOKEN_INVALID: { grpc: GrpcStatus.PERMISSION_DENIED, http: 403, summary: 'join token invalid' },
  FEDLORA_ERR_TOKEN_USED: { grpc: GrpcStatus.PERMISSION_DENIED, http: 403, summary: 'join token already used' },
  FEDLORA_ERR_TOKEN_EXPIRED: { grpc: GrpcStatus.PERMISSION_DENIED, http: 403, summary: 'join token expired' },
  FEDLORA_ERR_SITE_UNKNOWN: { grpc: GrpcStatus.PERMISSION_DENIED, http: 403, summary: 'unknown site' },
  FEDLORA_ERR_SITE_DISABLED: { grpc: GrpcStatus.PERMISSION_DENIED, http: 403, summary: 'site disabled' },
  FEDLORA_ERR_CERT_REVOKED: { grpc: GrpcStatus.PERMISSION_DENIED, http: 403, summary: 'certificate revoked' },
  FEDLORA_ERR_CERT_EXPIRED: { grpc: GrpcStatus.UNAUTHENTICATED, http: 401, summary: 'certificate expired' },
  FEDLORA_ERR_CERT_INVALID: { grpc: GrpcStatus.UNAUTHENTICATED, http: 401, summary: 'certificate invalid' },
  FEDLORA_ERR_CSR: { grpc: GrpcStatus.INVALID_ARGUMENT, http: 400, summary: 'certificate signing request invalid' },

  // ---- federation: jobs, rounds, transfers ------------------------------------------------
  FEDLORA_ERR_JOB_INVALID: { grpc: GrpcStatus.INVALID_ARGUMENT, http: 400, summary: 'job specification invalid' },
  FEDLORA_ERR_JOB_STATE: { grpc: GrpcStatus.FAILED_PRECONDITION, http: 409, summary: 'job is not in a state that allows this' },
  FEDLORA_ERR_ROUND_CLOSED: { grpc: GrpcStatus.FAILED_PRECONDITION, http: 409, summary: 'round is closed' },
  FEDLORA_ERR_NOT_SELECTED: { grpc: GrpcStatus.PERMISSION_DENIED, http: 403, summary: 'site not selected for this round' },
  FEDLORA_ERR_CHUNK_HASH: { grpc: GrpcStatus.DATA_LOSS, http: 400, summary: 'chunk hash mismatch' },
  FEDLORA_ERR_CHUNK_ORDER: { grpc: GrpcStatus.INVALID_ARGUMENT, http: 400, summary: 'chunk out of order' },
  FEDLORA_ERR_CHUNK_SIZE: { grpc: GrpcStatus.INVALID_ARGUMENT, http: 413, summary: 'chunk or update too large' },
  FEDLORA_ERR_UPDATE_HASH: { grpc: GrpcStatus.DATA_LOSS, http: 400, summary: 'update hash mismatch' },
  FEDLORA_ERR_UPDATE_INVALID: { grpc: GrpcStatus.INVALID_ARGUMENT, http: 400, summary: 'update rejected' },
  FEDLORA_ERR_UPDATE_NONFINITE: { grpc: GrpcStatus.INVALID_ARGUMENT, http: 400, summary: 'update contains NaN or Inf' },
  FEDLORA_ERR_REPLAY: { grpc: GrpcStatus.ALREADY_EXISTS, http: 409, summary: 'update replayed' },
  FEDLORA_ERR_SIGNATURE: { grpc: GrpcStatus.PERMISSION_DENIED, http: 403, summary: 'signature invalid' },
  FEDLORA_ERR_MODEL_MISMATCH: { grpc: GrpcStatus.FAILED_PRECONDITION, http: 409, summary: 'base model does not match' },
  FEDLORA_ERR_AGGREGATION: { grpc: GrpcStatus.INTERNAL, http: 500, summary: 'aggregation failed' },

  // ---- privacy and security ----------------------------------------------------------------
  FEDLORA_ERR_PRIVACY_BUDGET: { grpc: GrpcStatus.FAILED_PRECONDITION, http: 409, summary: 'privacy budget exhausted' },
  FEDLORA_ERR_POLICY: { grpc: GrpcStatus.FAILED_PRECONDITION, http: 409, summary: 'refused by site policy' },
  FEDLORA_ERR_SECAGG: { grpc: GrpcStatus.FAILED_PRECONDITION, http: 409, summary: 'secure aggregation failed' },
  FEDLORA_ERR_AUDIT_CHAIN: { grpc: GrpcStatus.DATA_LOSS, http: 500, summary: 'audit chain broken' },

  // ---- the site's assistant (serving, knowledge base, release gate) -------------------------
  FEDLORA_ERR_PROMPT_TOO_LONG: { grpc: GrpcStatus.INVALID_ARGUMENT, http: 400, summary: 'prompt longer than the server accepts' },
  FEDLORA_ERR_MODEL_NOT_SERVED: { grpc: GrpcStatus.NOT_FOUND, http: 404, summary: 'no such model on this server' },
  FEDLORA_ERR_GATE: { grpc: GrpcStatus.FAILED_PRECONDITION, http: 409, summary: 'adapter not released by the site gate' },
  FEDLORA_ERR_KB_DOCUMENT: { grpc: GrpcStatus.INVALID_ARGUMENT, http: 400, summary: 'knowledge-base document cannot be read' },
  FEDLORA_ERR_BACKEND: { grpc: GrpcStatus.UNAVAILABLE, http: 502, summary: 'model backend failed' },

  // ---- doctors' labels (annotation workbench) -----------------------------------------------
  FEDLORA_ERR_LABEL_STATE: { grpc: GrpcStatus.FAILED_PRECONDITION, http: 409, summary: 'the record is not in a state that takes this label' },
  FEDLORA_ERR_CODE_LIST: { grpc: GrpcStatus.INVALID_ARGUMENT, http: 400, summary: 'diagnosis code list cannot be read' },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

export class FedloraError extends Error {
  readonly code: ErrorCode;
  readonly details?: Record<string, unknown>;
  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'FedloraError';
    this.code = code;
    this.details = details;
  }
  get grpcStatus(): GrpcStatus {
    return ERRORS[this.code].grpc;
  }
  get httpStatus(): number {
    return ERRORS[this.code].http;
  }
  /** "FEDLORA_ERR_X: message" — the form printed by the CLI and sent as gRPC details. */
  toString(): string {
    return `${this.code}: ${this.message}`;
  }
}

export function isFedloraError(e: unknown): e is FedloraError {
  return e instanceof FedloraError;
}

/** Shorthand for throwing: `throw fail('FEDLORA_ERR_SHAPE', 'q_proj.lora_A is [4, 8], expected [8, 64]')`. */
export function fail(code: ErrorCode, message: string, details?: Record<string, unknown>): FedloraError {
  return new FedloraError(code, message, details);
}

/** Convert a gRPC ServiceError back into a FedloraError (the code travels in the details string). */
export function fromGrpcError(err: { code?: number; details?: string; message?: string }): FedloraError {
  const text = err.details ?? err.message ?? String(err);
  const m = /^(FEDLORA_ERR_[A-Z0-9_]+): ([\s\S]*)$/.exec(text);
  if (m && m[1] in ERRORS) return new FedloraError(m[1] as ErrorCode, m[2]);
  return new FedloraError('FEDLORA_ERR_UNAVAILABLE', text);
}

/** Convert any thrown value to a gRPC error object for a callback or `call.destroy`. */
export function toGrpcError(e: unknown): { code: GrpcStatus; details: string; message: string } {
  const fe = isFedloraError(e) ? e : new FedloraError('FEDLORA_ERR_INTERNAL', (e as Error)?.message ?? String(e));
  const details = fe.toString();
  return { code: fe.grpcStatus, details, message: details };
}
