// The S3 Storage driver. Loaded only through a dynamic import (the AWS SDK is heavy): nothing outside
// src/storage/s3/ imports the SDK.
import type { Readable } from 'node:stream';
import {
  GetObjectCommand,
  type GetObjectCommandOutput,
  ListObjectsV2Command,
  PutObjectCommand,
  type PutObjectCommandInput,
  type S3Client,
  type ServerSideEncryption,
  type StorageClass,
} from '@aws-sdk/client-s3';
import { configError, rewordError, unavailableError } from '../../common/errors.js';
import type {
  CallOptions,
  DeleteFailure,
  ListOptions,
  GetResult,
  ListedObject,
  ObjectInfo,
  ObjectMeta,
  PutBody,
  PutIfAbsentResult,
  Storage,
  UploadOptions,
} from '../types.js';
import { guardBody } from './body.js';
import { createS3Client } from './client.js';
import { putRequest } from './put-input.js';
import { fromS3Meta, toS3Meta, trimSlashes } from './meta.js';
import { classifyS3Error, describeFailure, errorCode, httpStatus, isNoSuchKey, type S3Op } from './errors.js';
import type { S3Options } from './options.js';
import { abortStaleMultipartUploads, multipartUpload, partSizeFor } from './upload.js';
import { repoCacheKey } from '../repo-key.js';
import { type ConditionalContext, conditionalWritesEnforced, notImplementedAfterProbe, PROBE_PREFIX } from './conditional.js';
import { checkListing, headObject, type KeyTarget } from './lookup.js';
import { deleteEach, type DeleteTarget } from './delete.js';
import { bucketObjectLock, lockFields, lockHint, objectLockReason, putRetention } from './object-lock.js';

export function createS3Storage(opts: S3Options): Storage {
  return new S3Storage(opts);
}

/** The store's identity for what it supports: the same bucket through another endpoint is another store. */
export function storeIdOf(opts: Pick<S3Options, 'endpoint' | 'region' | 'bucket'>): string {
  return `${opts.endpoint ?? `aws:${opts.region ?? ''}`}|${opts.bucket}`;
}

export type WriteParams = Pick<PutObjectCommandInput, 'StorageClass' | 'ServerSideEncryption' | 'SSEKMSKeyId'>;

/** The fields every write carries (storage class, SSE): a bucket policy may demand them. */
export function writeParamsFor(opts: S3Options): WriteParams {
  const p: WriteParams = {};
  if (opts.storageClass) p.StorageClass = opts.storageClass as StorageClass;
  if (opts.sse) {
    if (opts.sse !== 'AES256' && opts.sse !== 'aws:kms' && opts.sse !== 'aws:kms:dsse') {
      throw configError(`unsupported S3 server-side encryption ${JSON.stringify(opts.sse)} (use AES256 or aws:kms)`);
    }
    p.ServerSideEncryption = opts.sse as ServerSideEncryption;
    if (opts.sseKmsKeyId) p.SSEKMSKeyId = opts.sseKmsKeyId;
  } else if (opts.sseKmsKeyId) {
    throw configError('an SSE KMS key id needs S3 server-side encryption aws:kms');
  }
  return p;
}

class S3Storage implements Storage {
  readonly url: string;
  readonly cacheKey: string;
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly prefix: string;
  private readonly writeParams: WriteParams;
  private readonly storeId: string;
  private readonly deleteState = { noBatchDelete: false };
  private lockEnabled: Promise<boolean> | undefined;

  constructor(private readonly opts: S3Options) {
    if (!opts.bucket) throw configError('S3 repository needs a bucket name');
    this.bucket = opts.bucket;
    this.prefix = trimSlashes(opts.prefix ?? '');
    this.url = `s3://${this.bucket}${this.prefix ? `/${this.prefix}` : ''}`;
    this.cacheKey = repoCacheKey(this.url, opts);
    this.client = createS3Client(opts).client;
    this.storeId = storeIdOf(opts);
    this.writeParams = writeParamsFor(opts);
  }

  private fullKey(key: string): string {
    const k = key.replace(/^\/+/, '');
    return this.prefix ? `${this.prefix}/${k}` : k;
  }

  private relativeKey(full: string): string {
    return this.prefix && full.startsWith(`${this.prefix}/`) ? full.slice(this.prefix.length + 1) : full;
  }

  private where(op: string, key?: string): S3Op {
    return { op, target: key === undefined ? this.url : `s3://${this.bucket}/${this.fullKey(key)}` };
  }

  private async send<T>(where: S3Op, signal: AbortSignal | undefined, run: (o: { abortSignal?: AbortSignal }) => Promise<T>): Promise<T> {
    try {
      return await run(signal ? { abortSignal: signal } : {});
    } catch (e) {
      throw classifyS3Error(e, where);
    }
  }

  /** Storage class, SSE and the Object Lock retention (its date from now: call once per request). */
  private writeFields() {
    return { ...this.writeParams, ...lockFields(this.opts.objectLock) };
  }

  private putRequest(key: string, body: PutBody, meta: ObjectMeta, signal: AbortSignal | undefined) {
    return putRequest({ Bucket: this.bucket, Key: this.fullKey(key), ...this.writeFields() }, body, meta, signal);
  }

  private conditional(): ConditionalContext {
    return {
      client: this.client,
      bucket: this.bucket,
      probePrefix: this.fullKey(PROBE_PREFIX),
      putParams: { ContentType: 'application/octet-stream', ...this.writeFields() },
      bucketUrl: `s3://${this.bucket}`,
      repoUrl: this.url,
      storeId: this.storeId,
      mode: this.opts.conditionalWrites,
      ...(this.opts.capabilityFile ? { capabilityFile: this.opts.capabilityFile } : {}),
    };
  }

  async putIfAbsent(key: string, body: PutBody, meta: ObjectMeta, opts?: CallOptions): Promise<PutIfAbsentResult> {
    if (!(await conditionalWritesEnforced(this.conditional(), opts?.signal))) return this.headThenPut(key, body, meta, opts);
    const where = this.where('PutObject (If-None-Match)', key);
    for (let attempt = 0; ; attempt++) {
      const req = this.putRequest(key, body, meta, opts?.signal);
      try {
        await this.client.send(new PutObjectCommand({ ...req.input, IfNoneMatch: '*' }), req.options);
        return { created: true };
      } catch (e) {
        if (req.readError()) throw req.readError();
        const status = httpStatus(e);
        const code = errorCode(e);
        if (status === 412 || code === 'PreconditionFailed') {
          const existing = await this.head(key, opts);
          if (existing) return { created: false, existing };
          // Deleted between the PUT and the HEAD: try once more, then give up (retryable).
          if (attempt === 0) continue;
          throw unavailableError(`S3 ${where.op} ${where.target}: the store answered 412 but the object is missing`, { cause: e });
        }
        // A concurrent conditional write to the same key is in progress: worth another attempt.
        if (status === 409 || code === 'ConditionalRequestConflict') throw unavailableError(describeFailure(e, where), { cause: e });
        if (status === 501 || code === 'NotImplemented') {
          notImplementedAfterProbe(this.conditional(), describeFailure(e, where));
          return this.headThenPut(key, body, meta, opts);
        }
        throw lockHint(classifyS3Error(e, where), e, this.opts.objectLock);
      } finally {
        req.done();
      }
    }
  }

  /** For stores without If-None-Match (Swift s3api): not atomic, a concurrent writer can slip in. */
  private async headThenPut(key: string, body: PutBody, meta: ObjectMeta, opts?: CallOptions): Promise<PutIfAbsentResult> {
    const existing = await this.head(key, opts);
    if (existing) return { created: false, existing };
    await this.put(key, body, meta, opts);
    return { created: true };
  }

  async put(key: string, body: PutBody, meta: ObjectMeta, opts?: CallOptions): Promise<void> {
    const req = this.putRequest(key, body, meta, opts?.signal);
    try {
      await this.client.send(new PutObjectCommand(req.input), req.options);
    } catch (e) {
      throw req.readError() ?? lockHint(classifyS3Error(e, this.where('PutObject', key)), e, this.opts.objectLock);
    } finally {
      req.done();
    }
  }

  async upload(key: string, body: Readable, meta: ObjectMeta, opts?: UploadOptions): Promise<{ storedSize: number }> {
    const fields = this.writeFields();
    const done = await multipartUpload({
      client: this.client,
      bucket: this.bucket,
      key: this.fullKey(key),
      where: this.where('Upload', key),
      body,
      params: { Metadata: toS3Meta(meta), ContentType: 'application/octet-stream', ...fields },
      partSize: partSizeFor(this.opts.partSize, opts?.expectedSize),
      queueSize: this.opts.queueSize,
      ...(opts?.signal ? { signal: opts.signal } : {}),
      ...(opts?.onProgress ? { onProgress: opts.onProgress } : {}),
    });
    await putRetention(this.client, this.bucket, this.fullKey(key), fields, opts?.signal);
    return done;
  }

  private keyTarget(key: string): KeyTarget {
    const fullKey = this.fullKey(key);
    return { client: this.client, bucket: this.bucket, fullKey, key, target: `s3://${this.bucket}/${fullKey}` };
  }

  /** null only when a GET confirms the HEAD's 404 with NoSuchKey (src/storage/s3/lookup.ts). */
  async head(key: string, opts?: CallOptions): Promise<ObjectInfo | null> {
    return headObject(this.keyTarget(key), opts?.signal);
  }

  async get(key: string, opts?: CallOptions): Promise<GetResult | null> {
    const where = this.where('GetObject', key);
    let r: GetObjectCommandOutput;
    try {
      r = await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: this.fullKey(key) }),
        opts?.signal ? { abortSignal: opts.signal } : {},
      );
    } catch (e) {
      // Only S3's NoSuchKey: an HTML or empty 404 is an endpoint's answer, not the bucket's.
      if (isNoSuchKey(e)) return null;
      throw classifyS3Error(e, where);
    }
    if (!r.Body) throw unavailableError(`S3 GetObject ${where.target}: the response has no body`);
    const info: ObjectInfo = {
      key,
      storedSize: r.ContentLength ?? 0,
      meta: fromS3Meta(r.Metadata),
      ...(r.LastModified ? { lastModified: r.LastModified } : {}),
    };
    return { info, body: guardBody(r.Body as Readable, where, opts?.signal) };
  }

  async *list(prefix: string, opts?: ListOptions): AsyncIterable<ListedObject> {
    const full = this.fullKey(prefix); // 'repo/main/' for '': never matches 'repo/mainx/...'
    const where = this.where('ListObjectsV2', prefix);
    let token: string | undefined;
    do {
      const r = await this.send(where, opts?.signal, (o) =>
        this.client.send(
          new ListObjectsV2Command({
            Bucket: this.bucket,
            ...(full ? { Prefix: full } : {}),
            ...(token ? { ContinuationToken: token } : {}),
            ...(!token && opts?.startAfter ? { StartAfter: this.fullKey(opts.startAfter) } : {}),
            ...(this.opts.listPageSize || opts?.maxKeys ? { MaxKeys: Math.min(this.opts.listPageSize ?? 1000, opts?.maxKeys ?? 1000) } : {}),
          }),
          o,
        ),
      );
      checkListing(r, this.bucket, where);
      for (const c of r.Contents ?? []) {
        if (c.Key === undefined) continue;
        yield { key: this.relativeKey(c.Key), storedSize: c.Size ?? 0, lastModified: c.LastModified ?? new Date(0), ...(c.ETag ? { etag: c.ETag } : {}) };
      }
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token);
  }

  async delete(keys: string[], opts?: CallOptions): Promise<void> {
    const errors = await this.deleteEach(keys, opts);
    const first = errors[0];
    if (first) {
      const more = errors.length > 1 ? ` (and ${errors.length - 1} more keys)` : '';
      throw rewordError(first.error, first.error.message + more, { cause: first.error.cause, retryable: first.error.retryable });
    }
  }

  async deleteEach(keys: string[], opts?: CallOptions): Promise<DeleteFailure[]> {
    const target: DeleteTarget = {
      client: this.client,
      bucket: this.bucket,
      fullKey: (k) => this.fullKey(k),
      relativeKey: (k) => this.relativeKey(k),
      state: this.deleteState,
    };
    return deleteEach(target, keys, opts?.signal);
  }

  async objectLockEnabled(opts?: CallOptions): Promise<boolean> {
    // Cached per run; a failed question is asked again.
    this.lockEnabled ??= bucketObjectLock(this.client, this.bucket, opts?.signal).catch((e: unknown) => {
      this.lockEnabled = undefined;
      throw e;
    });
    return this.lockEnabled;
  }

  async objectLock(key: string, opts?: CallOptions): Promise<string | null> {
    return objectLockReason(this.client, this.bucket, this.fullKey(key), new Date(), opts?.signal);
  }

  async abortStaleUploads(prefix: string, olderThan: Date, opts?: CallOptions): Promise<number> {
    // 'repo/main/' for '': never matches 'repo/mainx/...'
    return abortStaleMultipartUploads(this.client, this.bucket, this.fullKey(prefix), this.where('ListMultipartUploads', prefix), olderThan, opts?.signal);
  }

  close(): void {
    this.client.destroy();
  }
}
