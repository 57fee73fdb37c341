// Error bodies. The OpenAI-compatible routes answer {error: {message, type, param, code}} as
// OpenAI does (clients map the status to their error classes); the site's own routes answer
// {error: {code, message}} like the coordinator. Codes come from shared/errors.ts; a queue-full
// refusal carries Retry-After.
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod';
import { FedloraError, isFedloraError } from '../../../shared/errors.ts';
import { QueueFullError } from '../queue.ts';

const OPENAI_TYPE: Record<number, string> = {
  400: 'invalid_request_error', 401: 'authentication_error', 403: 'permission_error', 404: 'not_found_error', 409: 'conflict_error', 429: 'rate_limit_error',
};

/** Any thrown value as a FedloraError; schema validation names the field. */
export function toFedloraError(err: unknown): FedloraError {
  if (isFedloraError(err)) return err;
  if (hasZodFastifySchemaValidationErrors(err)) {
    const first = err.validation.slice(0, 3).map((v) => `${err.validationContext ?? 'body'}${v.instancePath ? v.instancePath.replace(/\//g, '.') : ''}: ${v.message}`).join('; ');
    return new FedloraError('FEDLORA_ERR_INVALID_ARGUMENT', first);
  }
  const e = err as FastifyError;
  if (e.statusCode === 413) return new FedloraError('FEDLORA_ERR_INVALID_ARGUMENT', `request body too large: ${e.message}`);
  if (e.validation || (e.statusCode && e.statusCode >= 400 && e.statusCode < 500)) return new FedloraError('FEDLORA_ERR_INVALID_ARGUMENT', e.message ?? 'bad request');
  return new FedloraError('FEDLORA_ERR_INTERNAL', e?.message ?? String(err));
}

function retryAfter(reply: FastifyReply, fe: FedloraError): void {
  if (fe instanceof QueueFullError) reply.header('Retry-After', String(fe.retryAfterS));
}

export function openaiErrorBody(fe: FedloraError): { error: { message: string; type: string; param: string | null; code: string } } {
  const status = fe.httpStatus;
  return { error: { message: fe.message, type: OPENAI_TYPE[status] ?? (status >= 500 ? 'server_error' : 'invalid_request_error'), param: null, code: fe.code } };
}

export function openaiErrorHandler(err: unknown, _req: FastifyRequest, reply: FastifyReply): FastifyReply {
  const fe = toFedloraError(err);
  retryAfter(reply, fe);
  return reply.status(fe.httpStatus).send(openaiErrorBody(fe));
}

export function siteErrorHandler(err: unknown, _req: FastifyRequest, reply: FastifyReply): FastifyReply {
  const fe = toFedloraError(err);
  retryAfter(reply, fe);
  return reply.status(fe.httpStatus).send({ error: { code: fe.code, message: fe.message } });
}
