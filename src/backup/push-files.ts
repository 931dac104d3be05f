import { availableParallelism } from 'node:os';
import { access, constants, open, realpath } from 'node:fs/promises';
import { join } from 'node:path';
import { compressBuffer } from '../codec/codec.js';
import type { Config } from '../common/config.js';
import { backupError, isWalvaultError } from '../common/errors.js';
import { log } from '../common/log.js';
import { objectMeta } from '../archive/objects.js';
import { putOnce } from '../archive/small-objects.js';
import type { RepoManifest } from '../archive/manifest-parse.js';
import { sha256Hex } from '../fs/hash.js';
import { storedSizeFor, type Storage } from '../storage/types.js';
import { segmentOfEndLsn, segmentOfLsn } from '../wal/names.js';
import { backupKey, makeBackupId } from './catalog.js';
import { tablespaceVersionDir, walkDataDirectory } from './data-dir-walk.js';
import { uploadFiles, type ExtraFiles } from './file-engine.js';
import { FILE_LIST_OBJECT, serializeFileList, type FileList } from './file-list.js';
import { parseBackupLabel } from './label.js';
import { nextXidFromControl, type BaseBackupOptions } from './pg-basebackup.js';
import { buildBackupManifest } from './pg-manifest.js';
import { openBackupSession, type BackupSession } from './pg-session.js';
import { Progress } from './progress.js';
import { removeIncompleteBackup } from './push-cleanup.js';
import { findReference, loadReference, type Reference } from './reference.js';
import { checkSystem, finishBackup, uniqueId } from './push-finish.js';
import { finishStopSegmentOnPrimary } from './standby.js';
import { phase, phaseManifest, waitForRepoManifest } from './wait.js';

// backup-push --method files (format 2): one SQL session holds the backup open (pg_backup_start ..
// pg_backup_stop, pg-session.ts) while walvault reads the data directory itself (data-dir-walk.ts)
// with `jobs` workers (file-engine.ts). backup_label comes from pg_backup_stop and is stored as a
// file of the backup; backup_manifest is built from what was read (pg-manifest.ts), so
// pg_verifybackup checks a restored copy as it checks pg_basebackup's.

export async function pushFiles(storage: Storage, config: Config, opts: BaseBackupOptions & { incremental?: boolean }, signal: AbortSignal): Promise<number> {
  const localStart = new Date();
  const session = await openBackupSession(config, opts.dbname);
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    // Ending the session ends a backup still in progress: the server forgets it.
    await session.close().catch(() => undefined);
  };
  let id: string | undefined;
  try {
    const dataDir = await localDataDirectory(session);
    // Before the server's backup starts (a checkpoint): a damaged reference fails here.
    const reference = opts.incremental ? await referenceFor(storage, config, session, dataDir) : undefined;
    const { repo, startLsn } = await startChecked(storage, config, session, `walvault-${localStart.toISOString()}`, opts.checkpoint === 'fast', signal);
    const control = await readControl(dataDir, session.systemIdentifier);
    const startSegment = segmentOfLsn(startLsn, control.timeline, repo.walSegmentSize);
    id = await uniqueId(storage, makeBackupId(startSegment, localStart), config);
    const jobs = config.backupJobs ?? availableParallelism();
    log.info(`backup ${id}: started at ${startLsn} on timeline ${control.timeline} (${startSegment}), reading ${dataDir} with ${jobs} job${jobs === 1 ? '' : 's'}, uploading to ${storage.url}`);

    const entries = await walkDataDirectory(dataDir, { serverVersion: session.serverVersion, tablespaceVersionDir: tablespaceVersionDir(session.serverVersion, control.catalogVersion) });
    const progress = new Progress(`backup-push ${id}`, entries.reduce((a, e) => a + (e.size ?? 0), 0));
    let stopped: Awaited<ReturnType<BackupSession['stop']>> | undefined;
    let up;
    try {
      up = await uploadFiles(storage, config, {
        backup: id,
        dataDir,
        entries,
        jobs,
        bundleSize: config.backupBundleSize,
        ...(reference ? { reference } : {}),
        signal,
        onProgress: (n) => progress.update(n),
        extra: async () => {
          stopped = await session.stop(signal);
          return stopFiles(stopped);
        },
      });
    } finally {
      progress.done();
    }
    const localStop = new Date();
    const label = parseBackupLabel(stopped!.backupLabel);
    if (session.inRecovery) await finishStopSegmentOnPrimary(session, stopped!.stopLsn, segmentOfEndLsn(stopped!.stopLsn, label.startTimeline, repo.walSegmentSize), signal);
    await close();
    const manifest = buildBackupManifest(
      up.list.entries.flatMap((e) => (e.type === 'file' ? [{ path: e.path, size: e.size, mtimeMs: e.mtimeMs, sha256: e.sha256 }] : [])),
      { timeline: label.startTimeline, startLsn: label.startLsn, endLsn: stopped!.stopLsn },
    );
    const list = await storeFileList(storage, config, up.list);
    await finishBackup(storage, config, {
      id,
      format: { format: 2, method: 'files', type: up.list.type, ...(up.list.reference ? { reference: up.list.reference } : {}) },
      label,
      manifest,
      sizeBytes: up.sizeBytes,
      sha256: list.sha256,
      storedBytes: up.storedBytes + list.storedBytes,
      systemIdentifier: session.systemIdentifier,
      pgVersion: session.serverVersion,
      ...(control.startNextXid ? { startNextXid: control.startNextXid } : {}),
      localStart,
      localStop,
      repo: repo satisfies RepoManifest,
    }, signal);
    return 0;
  } catch (caught) {
    await close();
    const e = signal.aborted ? signal.reason : caught;
    if (id) await removeIncompleteBackup(storage, config, id);
    throw e instanceof Error && !isWalvaultError(e) ? backupError(`backup-push failed: ${e.message}`, { cause: e }) : e;
  } finally {
    await close();
  }
}

/**
 * The files pg_backup_stop returns, stored as files of the backup: backup_label, and tablespace_map
 * when the cluster has tablespaces (PostgreSQL recreates the pg_tblspc links from it at recovery
 * start; backup-fetch rewrites it when a tablespace is restored elsewhere).
 */
function stopFiles(stopped: { backupLabel: string; tablespaceMap: string }): ExtraFiles {
  const out = [{ path: 'backup_label', body: Buffer.from(stopped.backupLabel) }];
  if (stopped.tablespaceMap !== '') out.push({ path: 'tablespace_map', body: Buffer.from(stopped.tablespaceMap) });
  return out;
}

/**
 * --incremental without a usable reference takes a full backup and says so: a scheduled incremental
 * that refused would leave no backup at all, and a full one is always correct (only larger). A
 * reference that exists but is damaged is an error (loadReference).
 */
async function referenceFor(storage: Storage, config: Config, session: BackupSession, dataDir: string): Promise<Reference | undefined> {
  // A repository without walvault.json has archived nothing yet, so it holds no backup either.
  const repo = await phaseManifest(storage, config);
  const cluster = { systemIdentifier: session.systemIdentifier, timeline: (await readControl(dataDir, session.systemIdentifier)).timeline };
  const info = repo ? await findReference(storage, config, { ...cluster, segSize: repo.walSegmentSize }) : undefined;
  if (!info) {
    log.warn(`--incremental: no complete format-2 backup of system ${cluster.systemIdentifier} on timeline ${cluster.timeline} or its ancestors; taking a full backup`);
    return undefined;
  }
  const ref = await loadReference(storage, config, info);
  log.info(`--incremental: reference backup ${info.id} (${info.type ?? 'full'}, started ${info.startTime})`);
  return ref;
}

/**
* pg_backup_start, with the repository's walvault.json checked against the server before anything is
 * read (a backup of another cluster than the one archiving here is useless). A cluster that has not
 * archived a segment yet has no walvault.json: pg_backup_start's WAL switch makes its archiver push
 * one (creating it), so then it is checked right after the start, still before any file is read.
 */
async function startChecked(
  storage: Storage,
  config: Config,
  session: BackupSession,
  label: string,
  fast: boolean,
  signal: AbortSignal,
): Promise<{ repo: RepoManifest; startLsn: string }> {
  const known = await phaseManifest(storage, config);
  if (known) checkSystem(storage, known, session.systemIdentifier);
  const { startLsn } = await session.start(label, fast, signal);
  if (known) return { repo: known, startLsn };
  const repo = await waitForRepoManifest(storage, config, signal);
  checkSystem(storage, repo, session.systemIdentifier);
  return { repo, startLsn };
}

/** files.json, compressed with the backup's codec; its SHA-256 (uncompressed) goes into backup.json. */
export async function storeFileList(storage: Storage, config: Config, list: FileList): Promise<{ sha256: string; storedBytes: number }> {
  const body = serializeFileList(list);
  const sha256 = sha256Hex(body);
  const stored = await compressBuffer(config.compression, body, config.compressionLevel);
  const meta = { ...objectMeta({ sha256, size: body.length, codec: config.compression }), backup: list.backup };
  await phase(config, `upload ${FILE_LIST_OBJECT}`, (s) => putOnce(storage, backupKey(list.backup, FILE_LIST_OBJECT), stored, meta, { signal: s }));
  return { sha256, storedBytes: storedSizeFor(storage, stored.length) };
}

/** The server's data directory, which this host must be able to read (files are read here). */
async function localDataDirectory(session: BackupSession): Promise<string> {
  try {
    const dir = await realpath(session.dataDirectory);
    await access(join(dir, 'global', 'pg_control'), constants.R_OK);
    return dir;
  } catch (e) {
    throw backupError(
      `cannot read the server's data directory ${session.dataDirectory} here (${(e as NodeJS.ErrnoException).code ?? e}): ` +
        'run backup-push --method files on the database host as the server\'s OS user, or use --method stream',
    );
  }
}

/**
 * pg_control as the backup starts: its system identifier proves the directory read here is the
 * server's (not another cluster at the same path on this host); its checkpoint's timeline names the
 * backup's first segment before backup_label exists. checkPointCopy.ThisTimeLineID sits at @48
 * from pg_control version 1100 (PostgreSQL 11) on, at @56 in 1002 (10, which had prevCheckPoint).
 */
async function readControl(dataDir: string, systemIdentifier: string): Promise<{ timeline: number; catalogVersion: number; startNextXid?: string }> {
  const fh = await open(join(dataDir, 'global', 'pg_control'), 'r');
  let control: Buffer;
  try {
    control = Buffer.alloc(512);
    const { bytesRead } = await fh.read(control, 0, control.length, 0);
    control = control.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
  if (control.length < 72) throw backupError(`${dataDir}/global/pg_control is too short to be a PostgreSQL control file`);
  const local = control.readBigUInt64LE(0).toString();
  if (local !== systemIdentifier) {
    throw backupError(`${dataDir} holds the cluster with system identifier ${local}, but the server connected to is ${systemIdentifier}: run backup-push --method files on that server's host`);
  }
  const version = control.readUInt32LE(8);
  const timeline = control.readUInt32LE(version === 1002 ? 56 : 48);
  if (version < 1002 || timeline < 1) throw backupError(`${dataDir}/global/pg_control has no valid timeline`);
  const startNextXid = nextXidFromControl(control);
  // catalog_version_no follows pg_control_version: it names the tablespaces' PG_<major>_<catversion>.
  return { timeline, catalogVersion: control.readUInt32LE(12), ...(startNextXid ? { startNextXid } : {}) };
}
