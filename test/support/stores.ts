// S3 stores started by test/support/global-setup.ts, and raw S3 helpers for tests.
// The helpers use the SDK directly (not walvault's storage layer) so that a test can check what
// walvault really wrote, or plant objects walvault must cope with.
import { randomBytes } from 'node:crypto';
import { chmod, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { S3Options } from '../../src/storage/s3/options.js';
import {
  CreateBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { inject } from 'vitest';
import { tempDir } from './walvault.js';

export interface TestStore {
  name: 'rgw' | 'swift';
  endpoint: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** true for rgw (If-None-Match works), false for swift (501) */
  conditionalWrites: boolean;
  /** rgw: the user id behind accessKeyId (owner of the buckets the tests create). */
  user?: string;
  /** rgw: a second user that owns nothing; test/support/append-only.ts grants it rights by bucket policy. */
  pusher?: { user: string; accessKeyId: string; secretAccessKey: string };
}

declare module 'vitest' {
  export interface ProvidedContext {
    stores: TestStore[];
    /** Per-run scratch directory (0755) under /tmp, deleted by the global teardown. */
    tmpRoot: string;
    /** The walvault wrapper prepared by the global setup ('' when dist/ was not built). */
    walvaultBin: string;
  }
}

/** The stores the global setup started (WALVAULT_TEST_STORES selects which; default rgw and swift). */
export function testStores(): TestStore[] {
  const stores = inject('stores');
  if (!stores) throw new Error('no test stores provided: is test/support/global-setup.ts configured as globalSetup?');
  return stores;
}

const clients = new Map<string, S3Client>();

/**
 * One cached client per store and access key. WHEN_REQUIRED because the SDK's default flexible checksums break
 * streamed puts on both servers; maxAttempts 1 so a test sees the server's first answer instead
 * of a retried one; explicit timeouts because the Node handler has none by default.
 */
export function s3ClientFor(store: TestStore): S3Client {
  const cacheKey = `${store.name} ${store.endpoint} ${store.accessKeyId}`;
  let client = clients.get(cacheKey);
  if (!client) {
    client = new S3Client({
      endpoint: store.endpoint,
      region: store.region,
      credentials: { accessKeyId: store.accessKeyId, secretAccessKey: store.secretAccessKey },
      forcePathStyle: true,
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      maxAttempts: 1,
      requestHandler: { connectionTimeout: 5_000, requestTimeout: 60_000 },
    });
    clients.set(cacheKey, client);
  }
  return client;
}

/** Creates a bucket with a fresh name, so test files running in parallel never share one. */
export async function createTestBucket(store: TestStore, prefixHint = 'test'): Promise<string> {
  const hint = prefixHint.toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 30) || 'test';
  const name = `wv-${hint}-${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
  await s3ClientFor(store).send(new CreateBucketCommand({ Bucket: name }));
  return name;
}

/** A Buffer body gets a Content-Length and no aws-chunked framing, which Swift requires. */
export async function putRaw(
  store: TestStore,
  bucket: string,
  key: string,
  body: Buffer,
  metadata?: Record<string, string>,
): Promise<void> {
  await s3ClientFor(store).send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, Metadata: metadata }));
}

function isNotFound(err: unknown): boolean {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
  return e?.name === 'NoSuchKey' || e?.name === 'NotFound' || e?.$metadata?.httpStatusCode === 404;
}

/** The object's bytes and user metadata (keys lower-cased by S3), or null if it does not exist. */
export async function getRaw(
  store: TestStore,
  bucket: string,
  key: string,
): Promise<{ body: Buffer; metadata: Record<string, string> } | null> {
  try {
    const res = await s3ClientFor(store).send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    const bytes = await res.Body!.transformToByteArray();
    return { body: Buffer.from(bytes), metadata: res.Metadata ?? {} };
  } catch (err) {
    if (isNotFound(err)) return null;
    throw err;
  }
}

export async function headRaw(
  store: TestStore,
  bucket: string,
  key: string,
): Promise<{ size: number; etag: string; metadata: Record<string, string> } | null> {
  try {
    const res = await s3ClientFor(store).send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    return { size: res.ContentLength ?? 0, etag: res.ETag ?? '', metadata: res.Metadata ?? {} };
  } catch (err) {
    if (isNotFound(err)) return null;
    throw err;
  }
}

/** Single-object delete: DeleteObjects would need a Content-MD5 middleware on Swift. */
export async function deleteRaw(store: TestStore, bucket: string, key: string): Promise<void> {
  await s3ClientFor(store).send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
}

export async function listKeys(store: TestStore, bucket: string, prefix?: string): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const res = await s3ClientFor(store).send(
      new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }),
    );
    for (const o of res.Contents ?? []) if (o.Key !== undefined) keys.push(o.Key);
    token = res.IsTruncated ? res.NextContinuationToken : undefined;
  } while (token);
  return keys;
}

/** Incomplete multipart uploads: a failed backup-push must leave none behind. */
export async function listMultipartUploads(
  store: TestStore,
  bucket: string,
): Promise<{ key: string; uploadId: string }[]> {
  const uploads: { key: string; uploadId: string }[] = [];
  let keyMarker: string | undefined;
  let uploadIdMarker: string | undefined;
  for (;;) {
    const res = await s3ClientFor(store).send(
      new ListMultipartUploadsCommand({ Bucket: bucket, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker }),
    );
    for (const u of res.Uploads ?? []) uploads.push({ key: u.Key ?? '', uploadId: u.UploadId ?? '' });
    if (!res.IsTruncated) return uploads;
    keyMarker = res.NextKeyMarker;
    uploadIdMarker = res.NextUploadIdMarker;
  }
}

/**
 * The environment walvault reads for this store. AWS_EC2_METADATA_DISABLED keeps the SDK from
 * probing the instance metadata service (a 1 s+ timeout per attempt when it is absent).
 */
export function envFor(store: TestStore, bucket: string, prefix: string): Record<string, string> {
  const cleanPrefix = prefix.replace(/^\/+|\/+$/g, '');
  return {
    WALVAULT_REPO: cleanPrefix ? `s3://${bucket}/${cleanPrefix}` : `s3://${bucket}`,
    AWS_ENDPOINT_URL_S3: store.endpoint,
    AWS_REGION: store.region,
    AWS_ACCESS_KEY_ID: store.accessKeyId,
    AWS_SECRET_ACCESS_KEY: store.secretAccessKey,
    WALVAULT_S3_FORCE_PATH_STYLE: 'true',
    AWS_EC2_METADATA_DISABLED: 'true',
  };
}

/**
 * Writes a `walvault.json` pointing at `s3://<bucket>/<prefix>` on this store, with its spool in
 * `<home>/spool`, for PostgreSQL's archiver (running walvault as postgres, with its own environment).
 * walvault refuses a config file that a user other than the one running it (or root) could change,
 * so the file is root's (0644 in its own 0755 directory): postgres may read it and the tests, run
 * as root, may use it too (with a spool of their own: postgres's spool is refused to root).
 * `extra` adds settings or overrides these (a test going through a proxy sets its own s3Endpoint).
 * Returns the file's path.
 */
export async function writeRepoConfig(
  store: TestStore,
  bucket: string,
  prefix: string,
  home: string,
  extra: Record<string, unknown> = {},
): Promise<string> {
  const dir = await tempDir('wv-config');
  await chmod(dir, 0o755);
  const configFile = join(dir, 'walvault.json');
  await writeFile(
    configFile,
    JSON.stringify({
      repo: `s3://${bucket}/${prefix}`,
      s3Endpoint: store.endpoint,
      s3Region: store.region,
      s3ForcePathStyle: true,
      s3AccessKeyId: store.accessKeyId,
      s3SecretAccessKey: store.secretAccessKey,
      spool: join(home, 'spool'),
      ...extra,
    }),
    { mode: 0o644 },
  );
  return configFile;
}

/** Driver options for a test store: path-style, the SDK's checksums only when required, short timeouts. */
export function s3OptionsFor(store: TestStore, bucket: string, over: Partial<S3Options> = {}): S3Options {
  return {
    bucket,
    prefix: 'repo/main',
    endpoint: store.endpoint,
    region: store.region,
    forcePathStyle: true,
    accessKeyId: store.accessKeyId,
    secretAccessKey: store.secretAccessKey,
    checksumMode: 'when_required',
    conditionalWrites: 'auto',
    connectTimeoutMs: 2000,
    idleTimeoutMs: 5000,
    partSize: 5 * 1024 * 1024,
    queueSize: 2,
    ...over,
  };
}
