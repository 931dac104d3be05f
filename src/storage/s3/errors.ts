// The one place where AWS SDK / network errors become WalvaultErrors. Every S3 call in this
// directory funnels its failures through classifyS3Error, so retryability is decided here only.
import {
  WalvaultError,
  accessDeniedError,
  configError,
  integrityError,
  isWalvaultError,
  missingBucketError,
  storageError,
  unavailableError,
} from '../../common/errors.js';

/** The fields walvault reads from SDK service errors and Node network errors. */
interface ErrorShape {
  name?: unknown;
  code?: unknown;
  Code?: unknown;
  message?: unknown;
  $metadata?: { httpStatusCode?: unknown };
}

const NETWORK_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'EHOSTDOWN',
  'ERR_STREAM_PREMATURE_CLOSE',
  'UND_ERR_SOCKET',
]);

const UNAVAILABLE_CODES = new Set([
  'ExpiredToken',
  'ExpiredTokenException',
  'TokenRefreshRequired',
  'SlowDown',
  'Throttling',
  'ThrottlingException',
  'TooManyRequests',
  'RequestTimeout',
  'RequestTimeoutException',
  'ServiceUnavailable',
  'InternalError',
  'ConditionalRequestConflict',
  'OperationAborted',
  'TimeoutError',
  'AbortError',
  'RequestAbortedError',
]);

const ACCESS_CODES = new Set(['AccessDenied', 'SignatureDoesNotMatch', 'InvalidAccessKeyId', 'AllAccessDisabled', 'InvalidToken']);
const DIGEST_CODES = new Set(['BadDigest', 'InvalidDigest', 'XAmzContentSHA256Mismatch']);

/** HTTP status of an SDK service error, if the server answered at all. */
export function httpStatus(e: unknown): number | undefined {
  const s = (e as ErrorShape | null)?.$metadata?.httpStatusCode;
  return typeof s === 'number' ? s : undefined;
}

/** The S3 error code (`NoSuchKey`, `AccessDenied`...), a Node errno code, or the error name. */
export function errorCode(e: unknown): string {
  const x = e as ErrorShape | null;
  if (typeof x?.Code === 'string' && x.Code) return x.Code;
  if (typeof x?.code === 'string' && x.code && x.name !== 'TimeoutError' && x.name !== 'AbortError') return x.code;
  if (typeof x?.name === 'string' && x.name && x.name !== 'Error') return x.name;
  return 'UnknownError';
}

/** One-line SDK message; radosgw sends empty messages, which the SDK turns into 'UnknownError'. */
function sdkMessage(e: unknown): string {
  const m = (e as ErrorShape | null)?.message;
  if (typeof m !== 'string') return '';
  const line = m.replace(/\s+/g, ' ').trim();
  if (line === '' || line === 'UnknownError' || line === 'Unknown') return '';
  return line.length > 300 ? `${line.slice(0, 297)}...` : line;
}

/**
 * The one authoritative "this object does not exist": a 404 whose S3 error body says NoSuchKey. The
 * SDK turns every other 404 (a proxy's HTML page, an empty body, a misrouted gateway, and every HEAD,
 * which has no body) into `NotFound`; that is an endpoint answer, not the archive's (src/storage/s3/lookup.ts).
 */
export function isNoSuchKey(e: unknown): boolean {
  return (e as ErrorShape | null)?.Code === 'NoSuchKey' && httpStatus(e) === 404;
}

/** The SDK's deserializer failed: it attaches the raw text of the body it could not parse. */
function isNotS3Xml(e: unknown): boolean {
  return typeof (e as { $responseBodyText?: unknown } | null)?.$responseBodyText === 'string' || /XML parse error/.test(sdkMessage(e));
}

/** Content-Type of the answer behind an SDK error, to tell an HTML page from an S3 error body. */
function contentType(e: unknown): string | undefined {
  const headers = (e as { $response?: { headers?: Record<string, unknown> } } | null)?.$response?.headers;
  const v = headers?.['content-type'] ?? headers?.['Content-Type'];
  return typeof v === 'string' && v ? v.split(';')[0]!.trim().slice(0, 60) : undefined;
}

/** Why a 404 that is not NoSuchKey/NoSuchBucket proves nothing, for the one error line. */
function not404Answer(e: unknown): string {
  const x = e as ErrorShape | null;
  const type = contentType(e);
  const what = typeof x?.Code === 'string' && x.Code ? `S3 error code ${x.Code}` : `no S3 error code${type ? `, ${type} body` : ''}`;
  return (
    `${what}: not an authoritative "not found"; an endpoint, proxy or gateway answered instead of the ` +
    `bucket: check the endpoint URL and the bucket`
  );
}

/** What a failing call was doing: `S3 GetObject s3://bucket/prefix/key`. */
export interface S3Op {
  op: string;
  /** `s3://bucket/full/key` or `s3://bucket/prefix` for bucket-level calls. */
  target: string;
}

export function describeFailure(e: unknown, where: S3Op): string {
  const status = httpStatus(e);
  const code = errorCode(e);
  const msg = sdkMessage(e);
  const parts = [`S3 ${where.op} ${where.target} failed:`];
  if (status !== undefined) parts.push(`HTTP ${status}`);
  parts.push(code);
  let text = parts.join(' ');
  if (msg && msg !== code) text += `: ${msg}`;
  return text;
}

function isAbortOrTimeout(e: unknown): boolean {
  const name = (e as ErrorShape | null)?.name;
  return name === 'AbortError' || name === 'TimeoutError';
}

/** Maps any error thrown by the SDK (or the network) during `where` to the right WalvaultError. */
export function classifyS3Error(e: unknown, where: S3Op): WalvaultError {
  if (isWalvaultError(e)) return e;
  const status = httpStatus(e);
  const code = errorCode(e);
  const text = describeFailure(e, where);
  const opts = { cause: e };

  if (code === 'NoSuchBucket') return missingBucketError(`${text} (the bucket does not exist)`, opts);
  // Whoever answered was not S3 saying "no such key" (see isNoSuchKey): an endpoint error, retried.
  if (status === 404) return unavailableError(`${text} (${not404Answer(e)})`, opts);
  if (status === 403 || ACCESS_CODES.has(code)) {
    // A refused delete is what append-only credentials are for: only `walvault delete` needs the right.
    if (where.op.startsWith('DeleteObject') && code === 'AccessDenied') {
      return accessDeniedError(`${text} (these credentials may not delete: walvault delete needs s3:DeleteObject on the prefix; a pusher's append-only credentials lack it on purpose)`, opts);
    }
    return accessDeniedError(
      `${text} (check the credentials and the permissions; note that S3 answers 403 instead of 404 for a ` +
        `missing key when the caller lacks s3:ListBucket)`,
      opts,
    );
  }
  if (DIGEST_CODES.has(code)) return integrityError(`${text} (the data was corrupted in transit)`, opts);
  if (code === 'CredentialsProviderError' || /could not load credentials/i.test(sdkMessage(e))) {
    return accessDeniedError(`${text} (no usable AWS credentials: set a profile, static keys or the AWS_* variables)`, opts);
  }
  if (/region is missing/i.test(sdkMessage(e))) return configError(`${text} (set a region)`, opts);
  if (/CERT|SELF_SIGNED|ERR_TLS|ERR_SSL/.test(code)) {
    return storageError(`${text} (the endpoint's TLS certificate is not trusted: set the S3 CA bundle)`, opts);
  }
  if (
    (status !== undefined && (status >= 500 || status === 429 || status === 408)) ||
    UNAVAILABLE_CODES.has(code) ||
    NETWORK_CODES.has(code) ||
    isAbortOrTimeout(e) ||
    /socket hang up/i.test(sdkMessage(e))
  ) {
    return unavailableError(text, opts);
  }
  // An answer the SDK could not parse as XML (a 200 web page, another service): not the bucket.
  if (isNotS3Xml(e)) {
    return unavailableError(
      `S3 ${where.op} ${where.target} failed: HTTP ${status ?? '?'} with a body that is not S3's XML` +
        `${contentType(e) ? ` (${contentType(e)})` : ''}: an endpoint, proxy or gateway answered instead of the bucket: check the endpoint URL`,
      opts,
    );
  }
  return storageError(text, { cause: e, retryable: false });
}

/** An AbortError for `signal`, shaped like the one the SDK's HTTP handler throws. */
export function abortErrorFor(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  const err = new Error(reason instanceof Error ? `aborted: ${reason.message}` : 'aborted', { cause: reason });
  err.name = 'AbortError';
  return err;
}
