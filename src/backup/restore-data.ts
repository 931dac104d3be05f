import { execFile } from 'node:child_process';
import { chown, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { decompressStream, parseCodec } from '../codec/codec.js';
import { retryPolicy, type Config } from '../common/config.js';
import { backupError, describe as describeError, ExitCode, integrityError, isWalvaultError, WalvaultError } from '../common/errors.js';
import { HashingStream, sha256Hex } from '../common/hash.js';
import { formatBytes, log } from '../common/log.js';
import { Deadline, withRetry } from '../common/retry.js';
import type { Storage } from '../storage/types.js';
import { backupKey, DATA_OBJECT, MANIFEST_OBJECT, type BackupInfo } from './catalog.js';
import { findPgProgram } from './pgbin.js';
import { Progress } from './progress.js';
import { createExtractor } from './tar.js';

// backup-fetch's data restore: GET -> decompress -> SHA-256 -> tar extract into the target directory
// (retried from scratch on a retryable failure), then the checks of the result (backup_manifest,
// pg_verifybackup), and the clean-up that leaves nothing behind when any of it fails.

export async function restoreData(
  storage: Storage,
  config: Config,
  backup: BackupInfo,
  pgdata: string,
  owner: { uid: number; gid: number } | undefined,
  signal: AbortSignal,
): Promise<void> {
  const key = backupKey(backup.id, DATA_OBJECT);
  const maxAttempts = 3;
  for (let attempt = 1; ; attempt++) {
    const progress = new Progress(`backup-fetch ${backup.id}`, backup.sizeBytes);
    try {
      const deadline = new Deadline(config.deadline * 1000);
      let got;
      try {
        got = await withRetry(`get ${key}`, retryPolicy(config), deadline, (s) => storage.get(key, { signal: s }));
      } finally {
        deadline.dispose();
      }
      if (!got) throw backupError(`${storage.url}/${key} is missing: backup ${backup.id} is damaged`);
      const codec = parseCodec(got.info.meta['codec'] ?? backup.codec, `${storage.url}/${key} codec`);
      const hashing = new HashingStream({ limit: backup.sizeBytes, what: `${storage.url}/${key}` });
      const ticker = setInterval(() => progress.update(hashing.bytes), 200);
      ticker.unref();
      const extractor = createExtractor(pgdata, owner ? { owner } : {});
      const decompress = decompressStream(codec);
      try {
        await (pipeline as (...a: unknown[]) => Promise<void>)(got.body, ...(decompress ? [decompress] : []), hashing, extractor, { signal });
      } catch (e) {
        if (signal.aborted) throw signal.reason;
        throw classifyStreamError(e, `${storage.url}/${key}`);
      } finally {
        clearInterval(ticker);
        progress.update(hashing.bytes);
      }
      const digest = hashing.digest();
      if (hashing.bytes !== backup.sizeBytes || digest !== backup.sha256) {
        throw integrityError(
          `${storage.url}/${key} failed verification: got ${hashing.bytes} bytes with SHA-256 ${digest}, ` +
            `backup.json records ${backup.sizeBytes} bytes with SHA-256 ${backup.sha256}`,
        );
      }
      progress.done();
      log.info(`restored ${formatBytes(backup.sizeBytes)} (${extractor.entries()} entries) into ${pgdata}; SHA-256 verified`);
      return;
    } catch (e) {
      progress.done();
      const retryable = isWalvaultError(e) && e.retryable && !signal.aborted;
      if (!retryable || attempt >= maxAttempts) throw e;
      log.warn(`restore attempt ${attempt} failed (${describeError(e)}); emptying ${pgdata} and starting over`);
      await wipe(pgdata, false);
    }
  }
}

function classifyStreamError(e: unknown, where: string): unknown {
  if (isWalvaultError(e)) return e;
  const err = e as NodeJS.ErrnoException;
  if (err?.code?.startsWith('ERR_ZSTD') || err?.code === 'Z_DATA_ERROR' || err?.code === 'Z_BUF_ERROR' || err?.code?.startsWith('ERR__ZLIB')) {
    return integrityError(`${where} cannot be decompressed (${err.code}): corrupt or truncated`, { cause: e });
  }
  return new WalvaultError('StorageUnavailable', ExitCode.storageUnavailable, `reading ${where} failed: ${err?.code ?? err?.message ?? String(e)}`, {
    cause: e,
    retryable: true,
  });
}

/** pg_basebackup put backup_manifest into the tar; if it is missing, take the separate copy. */
export async function checkManifestFile(
  storage: Storage,
  config: Config,
  backup: BackupInfo,
  pgdata: string,
  owner: { uid: number; gid: number } | undefined,
): Promise<void> {
  const path = join(pgdata, MANIFEST_OBJECT);
  const local = await readFile(path).catch(() => null);
  if (local) {
    if (backup.manifestSha256 && sha256Hex(local) !== backup.manifestSha256) {
      throw integrityError(`${path} does not match the manifest recorded for backup ${backup.id}`);
    }
    return;
  }
  const key = backupKey(backup.id, MANIFEST_OBJECT);
  const deadline = new Deadline(config.deadline * 1000);
  try {
    const { downloadVerified } = await import('../repo/objects.js');
    const meta = await downloadVerified(storage, key, path, { policy: retryPolicy(config), deadline, what: `get ${key}` });
    if (!meta) throw backupError(`backup ${backup.id} has no backup_manifest, neither in the tar nor as ${storage.url}/${key}`);
    if (owner) await chown(path, owner.uid, owner.gid);
  } finally {
    deadline.dispose();
  }
}

export async function verifyBackup(config: Config, backup: BackupInfo, pgdata: string): Promise<void> {
  const bin = findPgProgram('pg_verifybackup', config.pgBinDir, backup.pgVersion);
  if (!bin) {
    log.warn('pg_verifybackup not found: the restored files were checked against the SHA-256 of the backup only');
    return;
  }
  const started = Date.now();
  const r = await new Promise<{ code: number; out: string }>((resolvePromise) => {
    execFile(bin, ['--no-parse-wal', '--quiet', pgdata], { maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1) : 0;
      resolvePromise({ code, out: `${stdout}${stderr}`.trim() });
    });
  });
  if (r.code !== 0) {
    const lines = r.out.split('\n');
    throw integrityError(
      `pg_verifybackup found the restored files do not match backup_manifest (${lines.length} line${lines.length === 1 ? '' : 's'}): ` +
        `${lines.slice(0, 10).join(' | ')}${lines.length > 10 ? ' | ...' : ''}`,
    );
  }
  log.info(`pg_verifybackup: every file matches backup_manifest (${((Date.now() - started) / 1000).toFixed(1)} s)`);
}

/** Leaves nothing behind: removes a directory we created, or empties one that was empty before. */
export async function wipe(pgdata: string, created: boolean): Promise<void> {
  try {
    if (created) {
      await rm(pgdata, { recursive: true, force: true });
      return;
    }
    for (const name of await readdir(pgdata)) await rm(join(pgdata, name), { recursive: true, force: true });
  } catch (e) {
    log.error(`could not clean up ${pgdata} after the failure: ${describeError(e)}; remove its contents before using it`);
  }
}
