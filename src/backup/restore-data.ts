import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, rmdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { decompressStream, parseCodec } from '../codec/codec.js';
import { classifyDownloadError } from '../archive/objects.js';
import { retryPolicy, type Config } from '../common/config.js';
import { backupError, describe as describeError, integrityError, isWalvaultError } from '../common/errors.js';
import { HashingStream } from '../fs/hash.js';
import { formatBytes, log } from '../common/log.js';
import { Deadline, withRetry } from '../common/retry.js';
import type { Storage } from '../storage/types.js';
import type { BackupInfo } from './backup-info.js';
import { backupKey, DATA_OBJECT, MANIFEST_OBJECT } from './catalog.js';
import { findPgProgram } from './pgbin.js';
import { Progress } from './progress.js';
import { removeContents } from './restore-target.js';
import type { Owner } from '../common/file-trust.js';
import { needsWorker, ownerEnv, sha256AsOwner, startWorker, writeAsOwner, type WorkerResult } from './restore-worker.js';
import { openSink } from './restore-sink.js';
import type { RestorePlan } from './file-plan.js';
import { loadRestorePlan, restoreFiles } from './restore-files.js';
import { RECORD_NAME } from './restore-record.js';
import { planFiles, withoutKept } from './file-plan.js';
import { deltaAsOwner } from './restore-worker.js';

// backup-fetch's data restore: GET -> decompress -> SHA-256 -> tar extract into the target directory
// (retried from scratch on a retryable failure; format 2, a file list and data objects, in
// restore-files.ts), then the checks of the result (backup_manifest, pg_verifybackup), and the
// clean-up that leaves nothing behind when any of it fails.

export async function restoreData(
  storage: Storage,
  config: Config,
  backup: BackupInfo,
  pgdata: string,
  owner: Owner | undefined,
  signal: AbortSignal,
  plan?: RestorePlan,
  resume?: Set<string>,
): Promise<void> {
  if (backup.format === 2) return restoreFiles(storage, config, plan ?? (await loadRestorePlan(storage, config, backup)), pgdata, owner, signal, resume);
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
      const sink = openSink(pgdata, owner);
      const decompress = decompressStream(codec);
      let result: WorkerResult;
      try {
        result = await sink.run((pipeline as (...a: unknown[]) => Promise<void>)(got.body, ...(decompress ? [decompress] : []), hashing, sink.stream, { signal }));
      } catch (e) {
        if (signal.aborted) throw signal.reason;
        throw classifyDownloadError(e, `${storage.url}/${key}`);
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
      log.info(
        `restored ${formatBytes(backup.sizeBytes)} (${result.entries} entries, ${result.files} files and ${result.dirs} directories fsynced) into ${pgdata}` +
          `${needsWorker(owner) ? ` as uid ${owner.uid}` : ''}; SHA-256 verified`,
      );
      return;
    } catch (e) {
      progress.done();
      const retryable = isWalvaultError(e) && e.retryable && !signal.aborted;
      if (!retryable || attempt >= maxAttempts) throw e;
      log.warn(`restore attempt ${attempt} failed (${describeError(e)}); emptying ${pgdata} and starting over`);
      await wipe(pgdata, false, owner);
    }
  }
}

/** pg_basebackup put backup_manifest into the tar; if it is missing, take the separate copy. */
export async function checkManifestFile(storage: Storage, config: Config, backup: BackupInfo, pgdata: string, owner: Owner | undefined): Promise<void> {
  const path = join(pgdata, MANIFEST_OBJECT);
  const local = await sha256AsOwner(pgdata, owner, MANIFEST_OBJECT);
  if (local !== null) {
    if (backup.manifestSha256 && local !== backup.manifestSha256) {
      throw integrityError(`${path} does not match the manifest recorded for backup ${backup.id}`);
    }
    return;
  }
  const key = backupKey(backup.id, MANIFEST_OBJECT);
  const deadline = new Deadline(config.deadline * 1000);
  // Downloaded and verified in a directory only this process's user can enter, then written in
  // like every other file of the data directory.
  const tmp = await mkdtemp(join(tmpdir(), 'walvault-manifest-'));
  try {
    const { downloadVerified } = await import('../archive/fetch.js');
    const staged = join(tmp, MANIFEST_OBJECT);
    const meta = await downloadVerified(storage, key, staged, { policy: retryPolicy(config), deadline, what: `get ${key}` });
    if (!meta) throw backupError(`backup ${backup.id} has no backup_manifest, neither in the tar nor as ${storage.url}/${key}`);
    if (backup.manifestSha256 && meta.sha256 !== backup.manifestSha256) {
      throw integrityError(`${storage.url}/${key} does not match the manifest recorded for backup ${backup.id}`, { retryable: false });
    }
    await writeAsOwner(pgdata, owner, [{ name: MANIFEST_OBJECT, data: (await readFile(staged)).toString('base64') }]);
  } finally {
    deadline.dispose();
    await rm(tmp, { recursive: true, force: true });
  }
}

/** pg_verifybackup over the restored tree, as the tree's owner (it reads what that user put there). */
export async function verifyBackup(config: Config, backup: BackupInfo, pgdata: string, owner?: Owner, ignore: string[] = []): Promise<void> {
  const bin = findPgProgram('pg_verifybackup', config.pgBinDir, backup.pgVersion);
  if (!bin) {
    log.warn('pg_verifybackup not found: the restored files were checked against the SHA-256 of the backup only');
    return;
  }
  const started = Date.now();
  const as = needsWorker(owner) ? { uid: owner.uid, gid: owner.gid, cwd: '/', env: ownerEnv() } : {};
  const r = await new Promise<{ code: number; out: string }>((resolvePromise) => {
    // (The progress record of a format-2 restore is still there: removed once this passed.)
    execFile(bin, ['--no-parse-wal', '--quiet', '--ignore', RECORD_NAME, ...ignore.flatMap((p) => ['--ignore', p]), pgdata], { maxBuffer: 16 * 1024 * 1024, ...as }, (err, stdout, stderr) => {
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

/**
 * Leaves nothing behind: removes a directory we created, or empties one that was empty before. What
 * is inside belongs to `owner` and is removed by a worker running as `owner`: a recursive delete as
 * root would follow a directory swapped for a link out of the tree. The directory itself is removed
 * by that worker too when the owner holds its parent (`ownerHoldsParent`, restore-target.ts).
 */
export async function wipe(pgdata: string, created: boolean, owner?: Owner, ownerHoldsParent = false): Promise<void> {
  try {
    if (!needsWorker(owner)) await removeContents(pgdata, created);
    else if (ownerHoldsParent) await startWorker('wipe', pgdata, owner, created ? 'remove' : undefined).done;
    else {
      await startWorker('wipe', pgdata, owner).done;
      // The parent is root's alone (restore-target.ts): nobody else can change what this name is.
      if (created) await rmdir(pgdata);
    }
  } catch (e) {
    log.error(`could not clean up ${pgdata} after the failure: ${describeError(e)}; remove its contents before using it`);
  }
}

/**
 * backup-fetch --delta (restore-delta.ts): checks the existing directory, removes what is not
 * exactly in the backup, and returns the plan of what is left to write.
 */
export async function planDelta(plan: RestorePlan, backup: BackupInfo, pgdata: string, owner: Owner | undefined): Promise<RestorePlan> {
  const started = Date.now();
  const files = planFiles(plan);
  const r = await deltaAsOwner(pgdata, owner, {
    systemIdentifier: backup.systemIdentifier,
    files: files.map((f) => ({ path: f.final, size: f.size, sha256: f.sha256 })),
    dirs: plan.dirs.map((d) => d.path),
  });
  const bits = Buffer.from(r.kept, 'base64');
  const kept = new Set(files.filter((_, i) => ((bits[i >> 3] ?? 0) >> (i & 7)) & 1).map((f) => f.path));
  const next = withoutKept(plan, kept);
  log.info(
    `--delta: ${kept.size} of ${files.length} files in ${pgdata} already match the backup and stay, ${r.removed} other entries removed ` +
      `(${((Date.now() - started) / 1000).toFixed(1)} s); ${next.objects.length} of ${plan.objects.length} objects to fetch`,
  );
  return next;
}
