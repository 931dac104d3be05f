// What counts as the store's own answer about a key or a prefix. A HEAD has no body, so the SDK calls
// every HEAD 404 `NotFound`, whether S3 said "no such key", a proxy served its 404 page or a gateway
// routed the request nowhere; and a listing parsed from a web page has no keys. Only S3's NoSuchKey
// (to a GET) and a ListBucketResult of our bucket are believed: anything else is an endpoint error.
import type { Readable } from 'node:stream';
import { GetObjectCommand, HeadObjectCommand, type ListObjectsV2CommandOutput, type S3Client } from '@aws-sdk/client-s3';
import { unavailableError } from '../../common/errors.js';
import { log } from '../../common/log.js';
import type { ObjectInfo } from '../types.js';
import { classifyS3Error, describeFailure, httpStatus, isNoSuchKey, type S3Op } from './errors.js';
import { fromS3Meta } from './meta.js';

export interface KeyTarget {
  client: S3Client;
  bucket: string;
  /** Key in the bucket (prefix included). */
  fullKey: string;
  /** Key relative to the repository, as reported in ObjectInfo. */
  key: string;
  /** `s3://bucket/full/key`, for messages. */
  target: string;
}

const call = (signal?: AbortSignal) => (signal ? { abortSignal: signal } : {});

/** HEAD `key`: its info, or null once a GET has confirmed the 404 with S3's NoSuchKey. */
export async function headObject(t: KeyTarget, signal?: AbortSignal): Promise<ObjectInfo | null> {
  try {
    const r = await t.client.send(new HeadObjectCommand({ Bucket: t.bucket, Key: t.fullKey }), call(signal));
    return {
      key: t.key,
      storedSize: r.ContentLength ?? 0,
      meta: fromS3Meta(r.Metadata),
      ...(r.LastModified ? { lastModified: r.LastModified } : {}),
    };
  } catch (e) {
    if (httpStatus(e) !== 404) throw classifyS3Error(e, { op: 'HeadObject', target: t.target });
  }
  return confirmByGet(t, signal);
}

/**
 * GET of the first byte, after a HEAD 404: NoSuchKey → null; NoSuchBucket, an HTML or empty 404 →
 * the classified error; the object → its info (the HEAD's 404 did not come from the bucket).
 */
async function confirmByGet(t: KeyTarget, signal?: AbortSignal): Promise<ObjectInfo | null> {
  const where: S3Op = { op: 'GetObject (bytes=0-0, confirming a HEAD 404)', target: t.target };
  let r;
  try {
    r = await t.client.send(new GetObjectCommand({ Bucket: t.bucket, Key: t.fullKey, Range: 'bytes=0-0' }), call(signal));
  } catch (e) {
    if (isNoSuchKey(e)) return null;
    // 416: an empty object exists, yet HEAD said 404. Two answers that disagree: ask again later.
    if (httpStatus(e) === 416) throw unavailableError(`${describeFailure(e, where)} (HEAD answered 404 for an existing object)`, { cause: e });
    throw classifyS3Error(e, where);
  }
  const body = r.Body as (Readable & { transformToByteArray?: () => Promise<Uint8Array> }) | undefined;
  // One byte is read to keep the connection reusable; a store that ignored the Range is cut off.
  if (body && (r.ContentLength ?? 0) <= 1 && body.transformToByteArray) await body.transformToByteArray().catch(() => undefined);
  else body?.destroy();
  const total = /\/(\d+)\s*$/.exec(r.ContentRange ?? '');
  log.debug(`${t.target}: HEAD answered 404 but a GET finds the object; using the GET's answer`);
  return {
    key: t.key,
    storedSize: total ? Number(total[1]) : (r.ContentLength ?? 0),
    meta: fromS3Meta(r.Metadata),
    ...(r.LastModified ? { lastModified: r.LastModified } : {}),
  };
}

/**
 * A 200 whose body is not a ListBucketResult of `bucket` (a web server's page, another service)
 * parses as a listing with no keys: that would read as "no objects", so it is an endpoint error.
 */
export function checkListing(r: ListObjectsV2CommandOutput, bucket: string, where: S3Op): void {
  if (r.Name === bucket) return;
  const got = r.Name === undefined ? 'no ListBucketResult' : `a listing of bucket ${JSON.stringify(r.Name.slice(0, 80))}`;
  throw unavailableError(
    `S3 ${where.op} ${where.target}: the answer (HTTP ${r.$metadata.httpStatusCode ?? '?'}) is ${got}, not a listing of ` +
      `bucket ${bucket}; an endpoint, proxy or gateway answered instead of the bucket: check the endpoint URL`,
  );
}
