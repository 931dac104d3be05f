import type { PutObjectCommandInput } from '@aws-sdk/client-s3';
import { fromFsError } from '../../common/errors.js';
import { bodySize, type ObjectMeta, type PutBody } from '../types.js';
import { contentMd5 } from './client.js';
import { toS3Meta } from './meta.js';

export interface PutRequest {
  input: PutObjectCommandInput;
  /** The caller's signal, also aborted when a streamed body cannot be read. */
  options: { abortSignal?: AbortSignal };
  /** The local read error that aborted the request, if any: reported instead of the abort. */
  readError(): Error | undefined;
  /** Closes a streamed body whatever the outcome. */
  done(): void;
}

/**
 * One PutObject. A streamed body (a large WAL segment) is opened here, once per request, with the
 * Content-MD5 computed when it was prepared: radosgw, Swift and AWS reject the PUT (400 BadDigest) if
 * the bytes read now differ. The SDK pipes the body without watching its errors (the request would
 * stall until a timeout), so a read error aborts the request at once.
 */
export function putRequest(
  target: Pick<PutObjectCommandInput, 'Bucket' | 'Key' | 'StorageClass' | 'ServerSideEncryption' | 'SSEKMSKeyId' | 'ObjectLockMode' | 'ObjectLockRetainUntilDate'>,
  body: PutBody,
  meta: ObjectMeta,
  signal: AbortSignal | undefined,
): PutRequest {
  const common = { ...target, ContentLength: bodySize(body), ContentType: 'application/octet-stream', Metadata: toS3Meta(meta) };
  if (Buffer.isBuffer(body)) {
    return { input: { ...common, Body: body, ContentMD5: contentMd5(body) }, options: signal ? { abortSignal: signal } : {}, readError: () => undefined, done: () => undefined };
  }
  const stream = body.open();
  const failed = new AbortController();
  let readError: Error | undefined;
  stream.once('error', (e) => {
    readError = fromFsError(e, `the body of ${target.Key}`, 'read');
    failed.abort(readError);
  });
  return {
    input: { ...common, Body: stream, ContentMD5: body.md5 },
    options: { abortSignal: signal ? AbortSignal.any([signal, failed.signal]) : failed.signal },
    readError: () => readError,
    done: () => stream.destroy(),
  };
}
