import { constants } from 'node:buffer';
import { availableParallelism } from 'node:os';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { decompressStream } from '../codec/codec.js';
import { classifyDownloadError, parseStoredMeta } from '../archive/objects.js';
import { readVerifiedSmall } from '../archive/small-objects.js';
import { retryPolicy, type Config } from '../common/config.js';
import { backupError, corruptObjectError, describe as describeError, integrityError, isWalvaultError } from '../common/errors.js';
import type { Owner } from '../common/file-trust.js';
import { formatBytes, log } from '../common/log.js';
import { ATTEMPT_TIMEOUT_BYTES, Deadline, policyForBody, withRetry } from '../common/retry.js';
import { HashingStream, sha256Hex } from '../fs/hash.js';
import type { Storage } from '../storage/types.js';
import { BACKUP_ID_GRAMMAR, type BackupInfo } from './backup-info.js';
import { backupKey, readBackup } from './catalog.js';
import { FILE_LIST_OBJECT, MAX_FILE_LIST_BYTES, parseFileList } from './file-list.js';
import { createdBy, planRestore, type ObjectPlan, type RestorePlan } from './file-plan.js';
import { ObjectCutter } from './object-cutter.js';
import { Progress } from './progress.js';
import { finishAsOwner, needsWorker } from './restore-worker.js';
import { openSink, removeAsOwner } from './restore-sink.js';
import { TAR_END, tarHeader } from './tar-encode.js';

// backup-fetch of a format-2 backup (file-list.ts): files.json is read and checked before anything
// is written; then the directories are created in one pass, and `jobs` workers each take the next
// data object: GET, decompress, SHA-256 of the object, cut into its files (each checked against
// its SHA-256 as it passes, object-cutter.ts), written through the same tar extractor as format 1
// (extract.ts: exclusive creation, no link followed; as the owner's restore worker when root
// restores for another user, one worker per object attempt). An object is retried alone: a failed
// attempt's files are removed and the object is fetched again. Any failure that outlives the
// retries stops the other workers, and backup-fetch then empties the target as for format 1.

/** Reads files.json, checks it against backup.json, and plans the restore; writes nothing. */
export async function loadRestorePlan(storage: Storage, config: Config, backup: BackupInfo): Promise<RestorePlan> {
  const key = backupKey(backup.id, FILE_LIST_OBJECT);
  const what = `${storage.url}/${key}`;
  const deadline = new Deadline(config.deadline * 1000);
  let body: Buffer | null;
  try {
    body = await readVerifiedSmall(storage, key, { policy: retryPolicy(config), deadline, what: `get ${key}`, maxSize: MAX_FILE_LIST_BYTES });
  } finally {
    deadline.dispose();
  }
  if (!body) throw backupError(`${what} is missing: backup ${backup.id} is damaged`);
  const digest = sha256Hex(body);
  if (digest !== backup.sha256) {
    throw integrityError(`${what} has SHA-256 ${digest}, backup.json records ${backup.sha256}: it is not this backup's file list`, { retryable: false });
  }
  // (V8 strings stop at ~512 MiB, below MAX_FILE_LIST_BYTES: say so rather than fail inside toString.)
  if (body.length > constants.MAX_STRING_LENGTH) {
    throw backupError(`${what} is ${formatBytes(body.length)}, more than this walvault can parse (${formatBytes(constants.MAX_STRING_LENGTH)})`);
  }
  const plan = planRestore(parseFileList(body.toString('utf8'), backup.id, what, BACKUP_ID_GRAMMAR), backup, what);
  await checkReferences(storage, config, backup, plan.references, what);
  return plan;
}

/**
 * An incremental backup stands on the objects of earlier backups: each one it names must be a
 * complete backup (a valid backup.json) of the same system, started before it.
 */
async function checkReferences(storage: Storage, config: Config, backup: BackupInfo, references: string[], what: string): Promise<void> {
  const deadline = new Deadline(config.deadline * 1000);
  try {
    for (const id of references) {
      const refuse = (why: string): never => {
        throw backupError(`${what} uses objects of backup ${id}, which ${why}; refusing to restore backup ${backup.id}`);
      };
      let other: BackupInfo | null;
      try {
        other = await readBackup(storage, id, retryPolicy(config), deadline);
      } catch (e) {
        if (isWalvaultError(e) && e.retryable) throw e;
        return refuse(`has no valid backup.json (${describeError(e)})`);
      }
      if (!other) return refuse('has no backup.json in this repository');
      if (other.systemIdentifier !== backup.systemIdentifier) refuse(`is of another system (${other.systemIdentifier}, not ${backup.systemIdentifier})`);
      if (!(Date.parse(other.startTime) < Date.parse(backup.startTime))) refuse(`did not start before it (${other.startTime}, not before ${backup.startTime})`);
    }
  } finally {
    deadline.dispose();
  }
}

export async function restoreFiles(
  storage: Storage,
  config: Config,
  plan: RestorePlan,
  pgdata: string,
  owner: Owner | undefined,
  signal: AbortSignal,
): Promise<void> {
  const started = Date.now();
  const jobs = Math.max(1, Math.min(config.backupJobs ?? availableParallelism(), plan.objects.length || 1));
  await createDirectories(plan, pgdata, owner, signal);

  const progress = new Progress(`backup-fetch ${plan.backup}`, plan.objectBytes);
  let doneBytes = 0;
  const inFlight = new Array<number>(jobs).fill(0);
  const ticker = setInterval(() => progress.update(doneBytes + inFlight.reduce((a, b) => a + b, 0)), 200);
  ticker.unref();
  // The first failure that outlives its retries stops every worker.
  const stop = new AbortController();
  const both = AbortSignal.any([signal, stop.signal]);
  let first: unknown;
  let next = 0;
  const work = async (job: number): Promise<void> => {
    for (let i = next++; i < plan.objects.length && !both.aborted; i = next++) {
      const op = plan.objects[i]!;
      await restoreObject(storage, config, op, pgdata, owner, both, (bytes) => (inFlight[job] = bytes));
      inFlight[job] = 0;
      doneBytes += op.object.size;
    }
  };
  try {
    await Promise.all(
      Array.from({ length: jobs }, (_, j) =>
        work(j).catch((e: unknown) => {
          if (first === undefined && !stop.signal.aborted) first = e;
          stop.abort(e);
        }),
      ),
    );
  } finally {
    clearInterval(ticker);
    progress.update(doneBytes);
    progress.done();
  }
  if (signal.aborted) throw signal.reason;
  if (first !== undefined) throw first;
  await finishAsOwner(
    pgdata,
    owner,
    plan.pieced.map((f) => ({ path: f.path, size: f.size, sha256: f.sha256, mtimeMs: f.mtimeMs })),
  );
  const secs = (Date.now() - started) / 1000;
  log.info(
    `restored ${formatBytes(plan.fileBytes)} (${plan.fileCount} files from ${plan.objects.length} objects, ${plan.dirs.length} directories` +
      `${plan.pieced.length ? `, ${plan.pieced.length} files in pieces` : ''}${plan.references.length ? `, objects of ${plan.references.length} earlier backups` : ''}) ` +
      `into ${pgdata}${needsWorker(owner) ? ` as uid ${owner.uid}` : ''} with ${jobs} job${jobs === 1 ? '' : 's'} in ${secs.toFixed(1)} s; ` +
      'SHA-256 of every object and file verified',
  );
}

/** The directories, parents first, as one tar stream of directory members. */
async function createDirectories(plan: RestorePlan, pgdata: string, owner: Owner | undefined, signal: AbortSignal): Promise<void> {
  if (plan.dirs.length === 0 && plan.empty.length === 0 && plan.pieced.length === 0) return;
  const members = function* (): Generator<Buffer> {
    for (const d of plan.dirs) yield tarHeader(d.path, 'dir', 0, d.mode, 0);
    // Files in pieces start empty: their extents are written into them at their positions.
    for (const f of [...plan.empty, ...plan.pieced]) yield tarHeader(f.path, 'file', 0, f.mode, f.mtimeMs);
    yield TAR_END;
  };
  const sink = openSink(pgdata, owner, true);
  try {
    await sink.run(pipeline(Readable.from(members()), sink.stream, { signal }));
  } catch (e) {
    await sink.stop();
    if (signal.aborted) throw signal.reason;
    throw e;
  }
}

/**
 * One data object, retried alone with the configured policy (the attempt timeout and the deadline
 * scale with the object's stored size, as for a large WAL upload: per started 64 MiB).
 */
async function restoreObject(
  storage: Storage,
  config: Config,
  op: ObjectPlan,
  pgdata: string,
  owner: Owner | undefined,
  signal: AbortSignal,
  onBytes: (bytes: number) => void,
): Promise<void> {
  const where = `${storage.url}/${op.key}`;
  const units = Math.max(1, Math.ceil(op.object.storedBytes / ATTEMPT_TIMEOUT_BYTES));
  const deadline = new Deadline(config.deadline * 1000 * units);
  const stopped = () => backupError(`stopped restoring ${op.key}: ${signal.reason instanceof Error ? signal.reason.message : 'interrupted'}`, { retryable: false });
  let dirty = false;
  try {
    await withRetry(`get ${op.key}`, policyForBody(retryPolicy(config), op.object.storedBytes), deadline, async (attemptSignal) => {
      if (signal.aborted) throw stopped();
      onBytes(0);
      if (dirty) {
        // What the failed attempt wrote goes, so the files can be created exclusively again.
        // (Extents of files in pieces are simply written again at their positions.)
        await removeAsOwner(pgdata, owner, createdBy(op));
        dirty = false;
      }
      const s = AbortSignal.any([attemptSignal, signal]);
      const got = await storage.get(op.key, { signal: s }).catch((e: unknown) => {
        // Another job's failure (or a signal) aborted this GET: not worth a retry, nor a warning.
        throw signal.aborted ? stopped() : e;
      });
      if (!got) throw backupError(`${where} is missing: backup ${op.object.backup} is damaged`);
      try {
        const meta = parseStoredMeta(got.info, where);
        if (meta.sha256 !== op.object.sha256 || meta.size !== op.object.size || meta.codec !== op.object.codec) {
          throw corruptObjectError(
            `${where} holds ${meta.size} bytes (${meta.codec}) with SHA-256 ${meta.sha256}; the file list records ` +
              `${op.object.size} bytes (${op.object.codec}) with SHA-256 ${op.object.sha256}`,
          );
        }
      } catch (e) {
        got.body.destroy();
        throw e;
      }
      const hashing = new HashingStream({ limit: op.object.size, what: where });
      // The object's own SHA-256 is checked before the tar stream ends, so the extractor never
      // finishes an object that fails it.
      const cutter = new ObjectCutter(op.files, where, () => {
        const digest = hashing.digest();
        if (hashing.bytes !== op.object.size || digest !== op.object.sha256) {
          throw integrityError(
            `${where} failed verification: got ${hashing.bytes} bytes with SHA-256 ${digest}, expected ${op.object.size} bytes with SHA-256 ${op.object.sha256}`,
          );
        }
      });
      const decompress = decompressStream(op.object.codec);
      const ticker = setInterval(() => onBytes(hashing.bytes), 200);
      ticker.unref();
      const sink = openSink(pgdata, owner, true);
      dirty = true;
      try {
        await sink.run((pipeline as (...a: unknown[]) => Promise<void>)(got.body, ...(decompress ? [decompress] : []), hashing, cutter, sink.stream, { signal: s }));
      } catch (e) {
        await sink.stop();
        if (signal.aborted) throw stopped();
        throw classifyDownloadError(e, where);
      } finally {
        clearInterval(ticker);
      }
      dirty = false;
      onBytes(hashing.bytes);
      log.debug(`restored ${op.files.length} files from ${op.key} (${formatBytes(op.object.size)})`);
    });
  } finally {
    deadline.dispose();
  }
}
