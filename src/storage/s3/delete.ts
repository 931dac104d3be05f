// Deleting objects: DeleteObjects in batches of 1000 (Content-MD5 added by the client middleware,
// which Swift and older MinIO/Ceph require), each refused key reported with the store's reason. A
// store that answers NotImplemented to DeleteObjects gets one DeleteObject per key for the rest of
// this Storage's life (nothing is remembered across runs).
import { DeleteObjectCommand, DeleteObjectsCommand, type S3Client } from '@aws-sdk/client-s3';
import { log } from '../../common/log.js';
import type { DeleteFailure } from '../types.js';
import { classifyS3Error, errorCode, httpStatus } from './errors.js';

const DELETE_BATCH = 1000;
/** Single-object deletes in flight at once on a store without DeleteObjects. */
const SINGLE_PARALLEL = 8;

export interface DeleteTarget {
  client: S3Client;
  bucket: string;
  /** Repository key → key in the bucket, and back. */
  fullKey(key: string): string;
  relativeKey(full: string): string;
  /** Shared between calls: set once the store answered NotImplemented to DeleteObjects. */
  state: { noBatchDelete: boolean };
}

export async function deleteEach(t: DeleteTarget, keys: string[], signal?: AbortSignal): Promise<DeleteFailure[]> {
  const failures: DeleteFailure[] = [];
  const o = signal ? { abortSignal: signal } : {};
  for (let i = 0; i < keys.length; i += DELETE_BATCH) {
    const batch = keys.slice(i, i + DELETE_BATCH);
    if (t.state.noBatchDelete) {
      failures.push(...(await deleteOneByOne(t, batch, signal)));
      continue;
    }
    let r;
    try {
      r = await t.client.send(
        new DeleteObjectsCommand({ Bucket: t.bucket, Delete: { Objects: batch.map((k) => ({ Key: t.fullKey(k) })), Quiet: true } }),
        o,
      );
    } catch (e) {
      if (httpStatus(e) === 501 || errorCode(e) === 'NotImplemented') {
        log.info(`s3://${t.bucket}: the store does not implement DeleteObjects; deleting one object per request`);
        t.state.noBatchDelete = true;
        failures.push(...(await deleteOneByOne(t, batch, signal)));
        continue;
      }
      throw classifyS3Error(e, { op: 'DeleteObjects', target: batch.length === 1 ? `s3://${t.bucket}/${t.fullKey(batch[0]!)}` : `s3://${t.bucket}` });
    }
    for (const x of r.Errors ?? []) {
      if (x.Code === 'NoSuchKey') continue;
      const err = Object.assign(new Error(x.Message ?? ''), { name: x.Code ?? 'UnknownError', Code: x.Code });
      const full = x.Key ?? '?';
      failures.push({ key: t.relativeKey(full), error: classifyS3Error(err, { op: 'DeleteObjects', target: `s3://${t.bucket}/${full}` }) });
    }
  }
  return failures;
}

async function deleteOneByOne(t: DeleteTarget, keys: string[], signal?: AbortSignal): Promise<DeleteFailure[]> {
  const failures: DeleteFailure[] = [];
  const o = signal ? { abortSignal: signal } : {};
  let next = 0;
  let fatal: unknown;
  const worker = async () => {
    while (next < keys.length && fatal === undefined) {
      const key = keys[next++]!;
      const target = `s3://${t.bucket}/${t.fullKey(key)}`;
      try {
        await t.client.send(new DeleteObjectCommand({ Bucket: t.bucket, Key: t.fullKey(key) }), o);
      } catch (e) {
        if (errorCode(e) === 'NoSuchKey') continue;
        const c = classifyS3Error(e, { op: 'DeleteObject', target });
        // A store or network failure is the whole call's (retried by the caller); a refusal is this key's.
        if (c.retryable) fatal ??= c;
        else failures.push({ key, error: c });
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(SINGLE_PARALLEL, keys.length) }, worker));
  if (fatal !== undefined) throw fatal;
  return failures;
}
