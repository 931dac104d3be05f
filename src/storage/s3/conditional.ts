// Does the store enforce `If-None-Match: *`? Some S3-compatible stores accept the header and ignore
// it: the conditional PUT then overwrites an archived segment and wal-push reports success. So the
// driver asks once per store (remembered by src/storage/s3/capabilities.ts): two conditional writes
// of a throw-away key; the second must be refused with 412.
import { randomBytes } from 'node:crypto';
import { DeleteObjectCommand, PutObjectCommand, type PutObjectCommandInput, type S3Client } from '@aws-sdk/client-s3';
import { configError, describe, isWalvaultError, unavailableError } from '../../common/errors.js';
import { log } from '../../common/log.js';
import { type ConditionalSupport, conditionalSupport, noteSupport } from './capabilities.js';
import { contentMd5 } from './client.js';
import { classifyS3Error, describeFailure, errorCode, httpStatus, type S3Op } from './errors.js';

/** Where probe objects go, relative to the repository prefix; each probe uses a fresh name. */
export const PROBE_PREFIX = 'state/probe/';

export interface ProbeTarget {
  client: S3Client;
  bucket: string;
  /** Full key of the repository's PROBE_PREFIX (prefix included). */
  probePrefix: string;
  /** The PutObject fields every write carries (storage class, SSE): a bucket policy may demand them. */
  putParams: Omit<PutObjectCommandInput, 'Bucket' | 'Key' | 'Body'>;
  /** `s3://bucket` for messages. */
  bucketUrl: string;
}

export interface ProbeResult {
  support: ConditionalSupport;
  /** The store's answer that decided it, for the log line or the ConfigError. */
  detail: string;
}

const BODY = Buffer.from('walvault: does this store enforce If-None-Match? (safe to delete)\n');
/** An Object Lock bucket refuses a PutObject without Content-MD5 (or a checksum) with 400. */
const BODY_MD5 = contentMd5(BODY);

const isPreconditionFailed = (e: unknown) => httpStatus(e) === 412 || errorCode(e) === 'PreconditionFailed';
const isNotImplemented = (e: unknown) => httpStatus(e) === 501 || errorCode(e) === 'NotImplemented';

export async function probeConditionalWrites(t: ProbeTarget, signal?: AbortSignal): Promise<ProbeResult> {
  const key = `${t.probePrefix}if-none-match-${Date.now().toString(36)}-${randomBytes(6).toString('hex')}`;
  const where: S3Op = { op: 'PutObject (If-None-Match probe)', target: `${t.bucketUrl}/${key}` };
  const opts = signal ? { abortSignal: signal } : {};
  const put = () =>
    t.client.send(
      new PutObjectCommand({ ...t.putParams, Bucket: t.bucket, Key: key, Body: BODY, ContentLength: BODY.length, ContentMD5: BODY_MD5, IfNoneMatch: '*' }),
      opts,
    );
  let created = false;
  try {
    try {
      await put();
      created = true;
    } catch (e) {
      if (isNotImplemented(e)) return { support: 'unsupported', detail: describeFailure(e, where) };
      // A fresh random name that already exists: the answer proves nothing, ask again later.
      if (isPreconditionFailed(e)) throw unavailableError(`${describeFailure(e, where)} (412 for a new key: the probe is inconclusive)`, { cause: e });
      throw classifyS3Error(e, where);
    }
    try {
      await put();
      return { support: 'ignored', detail: `${where.target}: a second PutObject with If-None-Match: * succeeded (the store ignores the header)` };
    } catch (e) {
      if (isPreconditionFailed(e)) return { support: 'enforced', detail: describeFailure(e, where) };
      if (isNotImplemented(e)) return { support: 'unsupported', detail: describeFailure(e, where) };
      throw classifyS3Error(e, where);
    }
  } finally {
    if (created) await removeProbe(t, key);
  }
}

/** Best effort: a leftover probe object costs a few bytes and is never read. */
async function removeProbe(t: ProbeTarget, key: string): Promise<void> {
  try {
    await t.client.send(new DeleteObjectCommand({ Bucket: t.bucket, Key: key }));
  } catch (e) {
    log.warn(`${describeFailure(e, { op: 'DeleteObject', target: `${t.bucketUrl}/${key}` })}: the probe object stays (safe to delete)`);
  }
}

export interface ConditionalContext extends ProbeTarget {
  /** `s3://bucket/prefix`, for messages. */
  repoUrl: string;
  /** Endpoint and bucket: what the answer is remembered under. */
  storeId: string;
  /** The spool file remembering answers; none: remembered for the process only. */
  capabilityFile?: string;
  /** s3ConditionalWrites. */
  mode: 'auto' | 'on' | 'off';
}

const NOT_ENFORCED: Record<Exclude<ConditionalSupport, 'enforced'>, string> = {
  unsupported: 'conditional writes are not supported by this store (it answers HTTP 501 NotImplemented to If-None-Match)',
  ignored: 'the store accepts If-None-Match but does not enforce it (a second conditional write of a probe object succeeded)',
};

/** Stores whose probe got an unexpected answer in this process (not remembered in the spool). */
const probeFailed = new Set<string>();

/**
 * Whether a PutObject with If-None-Match protects existing objects in this store. 'on' refuses a
 * store that does not enforce it (ConfigError); 'auto' falls back to HEAD then PUT, said once.
 */
export async function conditionalWritesEnforced(c: ConditionalContext, signal?: AbortSignal): Promise<boolean> {
  if (c.mode === 'off') return false;
  if (c.mode === 'auto' && probeFailed.has(c.storeId)) return false;
  let detail = '';
  let support: ConditionalSupport;
  try {
    support = await conditionalSupport(c.storeId, c.capabilityFile, async () => {
      const r = await probeConditionalWrites(c, signal);
      detail = r.detail;
      return r.support;
    });
  } catch (e) {
    // An answer the probe cannot read (a bucket policy, a proxy, a store refusing the probe's key)
    // must not fail every wal-push: HEAD then PUT still protects the archive. Transient failures
    // are retried instead, and nothing is remembered: a later process probes again.
    // (A missing bucket is not the probe's problem: every request would say so.)
    if (c.mode !== 'auto' || !isWalvaultError(e) || e.retryable || e.code === 'MissingBucket' || signal?.aborted) throw e;
    probeFailed.add(c.storeId);
    log.warn(`${c.repoUrl}: the If-None-Match probe failed (${describe(e)}); using HEAD then PUT in this process, which is not atomic`);
    return false;
  }
  if (support === 'enforced') return true;
  if (c.mode === 'on') {
    const risk = support === 'ignored' ? ', so a conditional write could overwrite an archived object' : '';
    throw configError(`${detail || c.repoUrl}: ${NOT_ENFORCED[support]}${risk}; set conditional writes to auto or off`);
  }
  // Only the process that probed says it: one line per store, not one per wal-push.
  if (detail) log.warn(`${c.repoUrl}: ${NOT_ENFORCED[support]}; using HEAD then PUT, which is not atomic (a concurrent writer can slip in)`);
  return false;
}

/** A 501 to a real conditional write after the probe said otherwise (the store changed): believe it. */
export function notImplementedAfterProbe(c: ConditionalContext, failure: string): void {
  if (c.mode === 'on') throw configError(`${failure}: ${NOT_ENFORCED.unsupported}; set conditional writes to auto or off`);
  noteSupport(c.storeId, c.capabilityFile, 'unsupported');
  log.warn(`${c.repoUrl}: ${NOT_ENFORCED.unsupported}; using HEAD then PUT, which is not atomic (a concurrent writer can slip in)`);
}
