import { isAbsolute } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Config } from '../common/config.js';
import { configError } from '../common/errors.js';
import { loadKeyring } from '../crypto/keyring.js';
import { withEncryption } from './encrypting.js';
import { repoCacheKey } from './repo-key.js';
import type { S3Options } from './s3/options.js';
import type { Storage } from './types.js';

export type RepoLocation = { scheme: 'file'; dir: string } | { scheme: 's3'; bucket: string; prefix: string };

export function parseRepoUrl(url: string | undefined): RepoLocation {
  if (!url) throw configError('no repository configured: set WALVAULT_REPO (s3://bucket/prefix or file:///path) or --repo');
  const m = /^([a-z0-9+.-]+):\/\//i.exec(url);
  const scheme = m?.[1]?.toLowerCase();
  if (scheme === 'file') {
    let dir: string;
    try {
      dir = fileURLToPath(url);
    } catch (e) {
      throw configError(`repository ${url}: ${(e as Error).message} (use file:///absolute/path)`);
    }
    if (!isAbsolute(dir)) throw configError(`repository ${url}: the path must be absolute (file:///absolute/path)`);
    return { scheme: 'file', dir: dir.replace(/\/+$/, '') || '/' };
  }
  if (scheme === 's3') {
    const rest = url.slice('s3://'.length);
    const slash = rest.indexOf('/');
    const bucket = slash < 0 ? rest : rest.slice(0, slash);
    const prefix = (slash < 0 ? '' : rest.slice(slash + 1)).replace(/^\/+|\/+$/g, '').replace(/\/{2,}/g, '/');
    if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) {
      throw configError(`repository ${url}: ${JSON.stringify(bucket)} is not a valid bucket name`);
    }
    return { scheme: 's3', bucket, prefix };
  }
  throw configError(
    `repository ${JSON.stringify(url)}: unknown scheme${scheme ? ` "${scheme}"` : ''} (expected s3://bucket/prefix or file:///path)`,
  );
}

/** The same `url` the driver will report, without opening it (no SDK load on local-only paths). */
export function storageUrlOf(repo: string | undefined): string {
  const loc = parseRepoUrl(repo);
  return loc.scheme === 'file' ? `file://${loc.dir}` : `s3://${loc.bucket}${loc.prefix ? `/${loc.prefix}` : ''}`;
}

/** storageUrlOf(), or undefined for a missing or invalid repository (the full path reports those). */
export function repoUrlOf(repo: string | undefined): string | undefined {
  try {
    return storageUrlOf(repo);
  } catch {
    return undefined;
  }
}

/**
 * The repository's spool key (Storage.cacheKey of the storage openStorage(config) returns), or
 * undefined for a missing or invalid repository. The endpoint is part of it for s3:// only.
 */
export function repoKeyOf(config: Pick<Config, 'repo' | 's3Endpoint' | 's3Profile'>): string | undefined {
  const url = repoUrlOf(config.repo);
  if (!url) return undefined;
  return url.startsWith('s3://') ? repoCacheKey(url, { endpoint: config.s3Endpoint, profile: config.s3Profile }) : repoCacheKey(url);
}

/** `capabilityFile`: where the S3 driver remembers what the endpoint supports (the caller's spool). */
export function s3OptionsFrom(config: Config, loc: { bucket: string; prefix: string }, capabilityFile?: string): S3Options {
  return {
    bucket: loc.bucket,
    prefix: loc.prefix,
    endpoint: config.s3Endpoint,
    region: config.s3Region,
    forcePathStyle: config.s3ForcePathStyle,
    profile: config.s3Profile,
    accessKeyId: config.s3AccessKeyId,
    secretAccessKey: config.s3SecretAccessKey,
    sessionToken: config.s3SessionToken,
    caBundle: config.s3CaBundle,
    storageClass: config.s3StorageClass,
    sse: config.s3Sse,
    sseKmsKeyId: config.s3SseKmsKeyId,
    checksumMode: config.s3ChecksumMode,
    conditionalWrites: config.s3ConditionalWrites,
    connectTimeoutMs: config.connectTimeout * 1000,
    idleTimeoutMs: config.idleTimeout * 1000,
    partSize: config.s3PartSize,
    queueSize: config.s3QueueSize,
    ...(config.s3ObjectLockMode && config.s3ObjectLockDays ? { objectLock: { mode: config.s3ObjectLockMode, days: config.s3ObjectLockDays } } : {}),
    ...(capabilityFile ? { capabilityFile } : {}),
  };
}

/**
 * Opens the configured repository: the driver (the S3 driver and the AWS SDK imported only here,
 * lazily) behind the encryption layer, which seals writes when a keyring is configured and refuses
 * to read an encrypted object without its key either way.
 */
export async function openStorage(config: Config, opts: { capabilityFile?: string } = {}): Promise<Storage> {
  const loc = parseRepoUrl(config.repo);
  const keyring = await loadKeyring({ file: config.encryptionKeyFile, command: config.encryptionKeyCommand });
  if (loc.scheme === 'file') {
    const { createFileStorage } = await import('./file/driver.js');
    return withEncryption(createFileStorage(loc.dir), keyring);
  }
  const { createS3Storage } = await import('./s3/driver.js');
  return withEncryption(createS3Storage(s3OptionsFrom(config, loc, opts.capabilityFile)), keyring);
}
