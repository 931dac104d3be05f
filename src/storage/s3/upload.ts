// Streamed multipart upload (base backups) with bounded memory, built on lib-storage's Upload, with
// three things lib-storage does not do by itself:
//  - an abort of the caller's signal (or the first failed request) cancels the UploadPart requests
//    still in flight and destroys the source, so nothing waits for parts that are useless now or
//    for a source that never delivers again (lib-storage passes no abort signal to its requests);
//  - done() settles only after the AbortMultipartUpload cleanup ran (Upload.abort() would reject
//    at once and abort the multipart upload later, in the background, or never if the process exits);
//  - a second AbortMultipartUpload is attempted if lib-storage's own one failed, so no incomplete
//    upload is left behind unless the store is unreachable (abortStaleUploads collects those).
import { Transform, pipeline, type Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  ListMultipartUploadsCommand,
  PutObjectCommand,
  UploadPartCommand,
  type PutObjectCommandInput,
  type S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { configError, isWalvaultError, localFileError } from '../../common/errors.js';
import { log } from '../../common/log.js';
import { abortErrorFor, classifyS3Error, errorCode, httpStatus, type S3Op } from './errors.js';

const MIN_PART_SIZE = 5 * 1024 * 1024;

export interface MultipartUploadParams {
  client: S3Client;
  bucket: string;
  /** Full object key (repository prefix included). */
  key: string;
  where: S3Op;
  body: Readable;
  /** Metadata, storage class, SSE: everything CreateMultipartUpload / PutObject should carry. */
  params: Omit<PutObjectCommandInput, 'Bucket' | 'Key' | 'Body'>;
  partSize: number;
  queueSize: number;
  signal?: AbortSignal;
  onProgress?: (storedBytes: number) => void;
}

type SendFn = (command: unknown, options?: { abortSignal?: AbortSignal }) => Promise<unknown>;

export async function multipartUpload(p: MultipartUploadParams): Promise<{ storedSize: number }> {
  if (!Number.isSafeInteger(p.partSize) || p.partSize < MIN_PART_SIZE) {
    throw configError(`S3 part size must be at least ${MIN_PART_SIZE} bytes (5 MiB), got ${p.partSize}`);
  }
  if (!Number.isSafeInteger(p.queueSize) || p.queueSize < 1) {
    throw configError(`S3 upload queue size must be at least 1, got ${p.queueSize}`);
  }
  if (p.signal?.aborted) {
    p.body.destroy();
    throw classifyS3Error(abortErrorFor(p.signal), p.where);
  }

  const ctl = new AbortController();
  let stored = 0;
  let firstFailure: unknown;
  let sourceError: unknown;

  const counter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      stored += chunk.length;
      cb(null, chunk);
    },
  });
  p.body.once('error', (e) => {
    // After stop() the pipeline destroys the source with our own error: that is not the source's.
    if (ctl.signal.aborted) return;
    sourceError = e;
    stop(e);
  });
  // Destroying `counter` (stop) also destroys the source; the callback only swallows the error.
  pipeline(p.body, counter, () => {});

  function stop(e: unknown): void {
    if (ctl.signal.aborted) return;
    firstFailure ??= e;
    ctl.abort(e);
    counter.destroy(e instanceof Error ? e : new Error(String(e)));
  }
  const onCallerAbort = (): void => stop(abortErrorFor(p.signal as AbortSignal));
  p.signal?.addEventListener('abort', onCallerAbort, { once: true });

  // Same client, but every request except AbortMultipartUpload fails fast once the upload is doomed,
  // and UploadPart / single PutObject requests are cancelled mid-flight. CreateMultipartUpload and
  // CompleteMultipartUpload are short and are left to finish so their outcome is known.
  const send: SendFn = (command, options) => {
    const base = p.client.send.bind(p.client) as SendFn;
    if (command instanceof AbortMultipartUploadCommand) return base(command, options);
    if (ctl.signal.aborted) return Promise.reject(abortErrorFor(ctl.signal));
    const cancellable = command instanceof UploadPartCommand || command instanceof PutObjectCommand;
    return base(command, cancellable ? { ...options, abortSignal: ctl.signal } : options).catch((e: unknown) => {
      stop(e);
      throw e;
    });
  };
  const scoped = Object.create(p.client) as S3Client;
  (scoped as unknown as { send: SendFn }).send = send;

  const upload = new Upload({
    client: scoped,
    params: { ...p.params, Bucket: p.bucket, Key: p.key, Body: counter },
    partSize: p.partSize,
    queueSize: p.queueSize,
    leavePartsOnError: false,
  });
  if (p.onProgress) {
    const report = p.onProgress;
    upload.on('httpUploadProgress', (progress) => {
      if (typeof progress.loaded === 'number') report(progress.loaded);
    });
  }

  try {
    // radosgw answers CompleteMultipartUpload with an empty <ETag></ETag>: the result is not checked.
    await upload.done();
    return { storedSize: stored };
  } catch (e) {
    const failure = firstFailure ?? e;
    await abortLeftover(p, upload.uploadId);
    if (sourceError !== undefined && failure === sourceError) {
      if (isWalvaultError(sourceError)) throw sourceError;
      const msg = sourceError instanceof Error ? sourceError.message : String(sourceError);
      throw localFileError(`${p.where.op} ${p.where.target}: reading the data to upload failed: ${msg}`, {
        cause: sourceError,
      });
    }
    throw classifyS3Error(failure, p.where);
  } finally {
    p.signal?.removeEventListener('abort', onCallerAbort);
    if (!counter.destroyed && !counter.readableEnded) counter.destroy();
  }
}

/** Best effort: lib-storage normally aborted it already; a 404 then just confirms that. */
async function abortLeftover(p: MultipartUploadParams, uploadId: string | undefined): Promise<void> {
  if (!uploadId) return;
  try {
    await p.client.send(new AbortMultipartUploadCommand({ Bucket: p.bucket, Key: p.key, UploadId: uploadId }));
  } catch {
    // NoSuchUpload (AWS, Swift) / NoSuchKey (radosgw): already gone. Anything else: the upload stays
    // until abortStaleUploads; the original failure is what the caller needs to see.
  }
}

const MAX_PARTS = 10_000;
const MiB = 1024 * 1024;

/** The configured part size, raised so that twice `expectedSize` fits in S3's 10,000 parts. */
export function partSizeFor(configured: number, expectedSize?: number): number {
  if (!expectedSize || expectedSize <= 0) return configured;
  const needed = Math.ceil((expectedSize * 2) / MAX_PARTS / MiB) * MiB;
  if (needed > configured) {
    log.info(`raising the multipart part size to ${needed / MiB} MiB for an expected ${Math.round(expectedSize / MiB)} MiB upload`);
    return needed;
  }
  return configured;
}

/** Aborts the multipart uploads under `fullPrefix` started before `olderThan` (left by a killed backup-push). */
export async function abortStaleMultipartUploads(
  client: S3Client,
  bucket: string,
  fullPrefix: string,
  where: S3Op,
  olderThan: Date,
  signal?: AbortSignal,
): Promise<number> {
  const opts = signal ? { abortSignal: signal } : {};
  let keyMarker: string | undefined;
  let uploadIdMarker: string | undefined;
  let aborted = 0;
  for (;;) {
    let r;
    try {
      r = await client.send(
        new ListMultipartUploadsCommand({
          Bucket: bucket,
          ...(fullPrefix ? { Prefix: fullPrefix } : {}),
          ...(keyMarker ? { KeyMarker: keyMarker } : {}),
          ...(uploadIdMarker ? { UploadIdMarker: uploadIdMarker } : {}),
        }),
        opts,
      );
    } catch (e) {
      throw classifyS3Error(e, where);
    }
    for (const u of r.Uploads ?? []) {
      if (!u.Key || !u.UploadId || !u.Initiated || u.Initiated.getTime() >= olderThan.getTime()) continue;
      try {
        await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: u.Key, UploadId: u.UploadId }), opts);
        aborted++;
      } catch (e) {
        // NoSuchUpload (AWS, Swift) or NoSuchKey (radosgw): completed or aborted meanwhile.
        const code = errorCode(e);
        if (code !== 'NoSuchUpload' && code !== 'NoSuchKey' && httpStatus(e) !== 404) {
          throw classifyS3Error(e, { op: 'AbortMultipartUpload', target: `s3://${bucket}/${u.Key}` });
        }
      }
    }
    if (!r.IsTruncated) break;
    // Some stores omit the markers on a truncated page; stop rather than loop forever.
    if (!r.NextKeyMarker && !r.NextUploadIdMarker) break;
    keyMarker = r.NextKeyMarker;
    uploadIdMarker = r.NextUploadIdMarker;
  }
  return aborted;
}
