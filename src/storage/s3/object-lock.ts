// S3 Object Lock: a bucket with it enabled refuses to delete a locked version (a retain-until date in
// the future, or a legal hold), or on a versioned bucket only hides it behind a delete marker. Retention
// asks before it deletes, so a locked object is skipped and reported instead of failing half-way.
import { GetObjectLockConfigurationCommand, HeadObjectCommand, PutObjectRetentionCommand, type ObjectLockMode, type S3Client } from '@aws-sdk/client-s3';
import { rewordError, type WalvaultError } from '../../common/errors.js';
import { classifyS3Error, errorCode, httpStatus } from './errors.js';
import type { S3Options } from './options.js';

const DAY_MS = 86_400_000;

export interface LockFields {
  ObjectLockMode?: ObjectLockMode;
  ObjectLockRetainUntilDate?: Date;
}

/**
 * The retention a write carries (s3ObjectLockMode/Days): until `now` + days, computed for each request
 * so that a long-running process (a backup, the look-ahead worker) never writes a shorter one.
 * Nothing without the settings: the bucket's default retention, if any, applies then.
 */
export function lockFields(lock: S3Options['objectLock'], now = new Date()): LockFields {
  if (!lock) return {};
  return { ObjectLockMode: lock.mode === 'compliance' ? 'COMPLIANCE' : 'GOVERNANCE', ObjectLockRetainUntilDate: new Date(now.getTime() + lock.days * DAY_MS) };
}

/**
 * Sets the retention of a completed multipart upload again, on the object itself: radosgw completes
 * a multipart upload without the retention its CreateMultipartUpload carried (measured: HEAD shows
 * none), so it would stay unlocked. The same mode and date (never shorter), so a store that kept
 * them accepts it as a no-op. Needs s3:PutObjectRetention.
 */
export async function putRetention(client: S3Client, bucket: string, fullKey: string, fields: LockFields, signal?: AbortSignal): Promise<void> {
  if (!fields.ObjectLockMode || !fields.ObjectLockRetainUntilDate) return;
  // The one storage call retried here: it follows a completed upload, and a failure handed to the
  // caller's retry would upload the whole object again (another version, on radosgw an unlocked one
  // left behind) to redo a request of a few hundred bytes.
  for (let attempt = 0; ; attempt++) {
    try {
      await client.send(
        new PutObjectRetentionCommand({ Bucket: bucket, Key: fullKey, Retention: { Mode: fields.ObjectLockMode, RetainUntilDate: fields.ObjectLockRetainUntilDate } }),
        signal ? { abortSignal: signal } : {},
      );
      return;
    } catch (e) {
      const err = classifyS3Error(e, { op: 'PutObjectRetention', target: `s3://${bucket}/${fullKey}` });
      if (!err.retryable || attempt >= RETENTION_RETRIES || signal?.aborted) throw err;
      await new Promise((r) => setTimeout(r, 250 * 2 ** attempt));
    }
  }
}

/** Extra attempts of the PutObjectRetention that follows a multipart upload. */
const RETENTION_RETRIES = 3;

/** A write carrying a retention refused with 400 InvalidRequest: most likely a bucket without Object Lock. */
export function lockHint(err: WalvaultError, e: unknown, lock: S3Options['objectLock']): WalvaultError {
  if (!lock || httpStatus(e) !== 400 || errorCode(e) !== 'InvalidRequest') return err;
  return rewordError(err, `${err.message} (the write carries an S3 Object Lock retention, s3ObjectLockMode: does the bucket have Object Lock enabled? walvault check tells)`, {
    cause: e,
    retryable: err.retryable,
  });
}

/** Whether the bucket has Object Lock enabled; a missing configuration means it has not. */
export async function bucketObjectLock(client: S3Client, bucket: string, signal?: AbortSignal): Promise<boolean> {
  try {
    const r = await client.send(new GetObjectLockConfigurationCommand({ Bucket: bucket }), signal ? { abortSignal: signal } : {});
    return r.ObjectLockConfiguration?.ObjectLockEnabled === 'Enabled';
  } catch (e) {
    const code = errorCode(e);
    // AWS: ObjectLockConfigurationNotFoundError (404); some stores answer a bare 404 or NotImplemented.
    if (code === 'ObjectLockConfigurationNotFoundError' || code === 'NoSuchObjectLockConfiguration' || code === 'NotImplemented' || httpStatus(e) === 501) return false;
    if (httpStatus(e) === 404 && code !== 'NoSuchBucket') return false;
    throw classifyS3Error(e, { op: 'GetObjectLockConfiguration', target: `s3://${bucket}` });
  }
}

/** Why the object at `fullKey` is locked now, or null (also null when it no longer exists). */
export async function objectLockReason(client: S3Client, bucket: string, fullKey: string, now: Date, signal?: AbortSignal): Promise<string | null> {
  let r;
  try {
    r = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: fullKey }), signal ? { abortSignal: signal } : {});
  } catch (e) {
    // Gone already: nothing to protect. (A HEAD 404 has no body to tell NoSuchKey from a proxy's
    // page; the delete that follows goes to the same endpoint, so this decides nothing unsafe.)
    if (httpStatus(e) === 404) return null;
    throw classifyS3Error(e, { op: 'HeadObject', target: `s3://${bucket}/${fullKey}` });
  }
  const reasons: string[] = [];
  if (r.ObjectLockLegalHoldStatus === 'ON') reasons.push('legal hold');
  const until = r.ObjectLockRetainUntilDate;
  if (until && until.getTime() > now.getTime()) reasons.push(`${r.ObjectLockMode ?? 'retention'} until ${until.toISOString()}`);
  return reasons.length > 0 ? reasons.join(', ') : null;
}
