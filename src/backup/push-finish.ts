import type { Config } from '../common/config.js';
import { backupError } from '../common/errors.js';
import { formatBytes, log } from '../common/log.js';
import { VERSION } from '../common/version.js';
import { smallObjectMeta } from '../archive/objects.js';
import { putOnce } from '../archive/small-objects.js';
import type { RepoManifest } from '../archive/manifest-parse.js';
import { checkEncryption } from '../archive/manifest.js';
import type { Storage } from '../storage/types.js';
import { segmentOfEndLsn, segmentOfLsn } from '../wal/names.js';
import type { BackupInfo } from './backup-info.js';
import { BACKUPS_PREFIX, backupKey, MANIFEST_OBJECT, SENTINEL_OBJECT, sentinelBody } from './catalog.js';
import { backupHistoryFileName, type BackupLabel } from './label.js';
import { manifestWalSpan, parseBackupManifest } from './manifest.js';
import { phase, waitForRepoManifest, waitForWal } from './wait.js';

// The end of every backup-push, whatever read the files (push-stream.ts, push-files.ts): the
// backup_manifest as its own object, the WAL that ends the backup in the archive, and backup.json,
// the sentinel, written last: until then the backup does not exist for backup-list and backup-fetch.

export interface FinishInput {
  id: string;
  format: { format: 1 } | ({ format: 2; method: 'files' | 'stream' } & Pick<BackupInfo, 'type' | 'reference'>);
  /** backup_label as the server wrote it. */
  label: BackupLabel;
  /** backup_manifest as PostgreSQL (or buildBackupManifest) wrote it. */
  manifest: Buffer;
  /** tablespace_map, when the backup has one. */
  tablespaceMap?: string;
  sizeBytes: number;
  sha256: string;
  storedBytes: number;
  systemIdentifier: string;
  pgVersion: number;
  startNextXid?: string;
  localStart: Date;
  localStop: Date;
  /** The repository's walvault.json, when the caller already checked it against the cluster. */
  repo?: RepoManifest;
}

export async function finishBackup(storage: Storage, config: Config, input: FinishInput, signal: AbortSignal): Promise<BackupInfo> {
  const { id, label } = input;
  const manifest = parseBackupManifest(input.manifest.toString('utf8'));
  // pg_basebackup's single tar (format 1, --method stream) holds the data directory only.
  const withTablespaces = (input.tablespaceMap !== undefined && input.tablespaceMap.trim() !== '') || manifest.tablespaceFiles > 0;
  if (withTablespaces && !(input.format.format === 2 && input.format.method === 'files')) throw tablespacesError();
  const span = manifestWalSpan(manifest);

  // The manifest as its own object (small; pg_verifybackup reads it back at restore time).
  const manifestMeta = smallObjectMeta(input.manifest);
  await phase(config, `upload ${MANIFEST_OBJECT}`, (s) => putOnce(storage, backupKey(id, MANIFEST_OBJECT), input.manifest, manifestMeta, { signal: s }));

  // The backup is usable only with the WAL up to its end in the archive.
  const repo = input.repo ?? (await waitForRepoManifest(storage, config, signal));
  checkSystem(storage, repo, input.systemIdentifier);
  const segSize = repo.walSegmentSize;
  const startSegment = segmentOfLsn(span.startLsn, span.startTimeline, segSize);
  const stopSegment = segmentOfEndLsn(span.stopLsn, span.stopTimeline, segSize);
  const history = label.backupFrom === 'primary' ? backupHistoryFileName(label.startSegment, label.startLsn, segSize) : undefined;
  const historyLabel = await waitForWal(storage, config, stopSegment, history, signal);

  // An instant at or after the true end: recovery targets after it are reachable from this backup.
  let stopTime = input.localStop;
  if (historyLabel?.stopTime) {
    const serverStopCeil = new Date(historyLabel.stopTime.getTime() + 1000);
    if (serverStopCeil > stopTime) stopTime = serverStopCeil;
  }
  const startTime = label.startTime ?? input.localStart;
  const info: BackupInfo = {
    ...input.format,
    id,
    label: label.label,
    startTime: startTime.toISOString(),
    stopTime: stopTime.toISOString(),
    startLsn: span.startLsn,
    stopLsn: span.stopLsn,
    checkpointLsn: label.checkpointLsn,
    timeline: label.startTimeline,
    stopTimeline: span.stopTimeline,
    startSegment,
    stopSegment,
    walSegmentSize: segSize,
    sizeBytes: input.sizeBytes,
    sha256: input.sha256,
    storedBytes: input.storedBytes,
    codec: config.compression,
    fileCount: manifest.fileCount,
    filesBytes: manifest.filesBytes,
    manifestSha256: manifestMeta.sha256,
    pgVersion: input.pgVersion > 0 ? input.pgVersion : (repo.pgVersion ?? 0),
    systemIdentifier: input.systemIdentifier,
    ...(input.startNextXid ? { startNextXid: input.startNextXid } : {}),
    backupFrom: label.backupFrom,
    serverStartTime: label.startTimeText,
    ...(historyLabel?.stopTimeText ? { serverStopTime: historyLabel.stopTimeText } : {}),
    walvaultVersion: VERSION,
  };
  if (input.format.format === 2 && input.format.reference) await checkReferenceStillThere(storage, config, id, input.format.reference);
  const { body, meta } = sentinelBody(info);
  const res = await phase(config, `write ${SENTINEL_OBJECT}`, (s) => storage.putIfAbsent(backupKey(id, SENTINEL_OBJECT), body, meta, { signal: s }));
  if (!res.created) throw backupError(`${storage.url}/${backupKey(id, SENTINEL_OBJECT)} already exists; not overwriting it`);
  const secs = (input.localStop.getTime() - input.localStart.getTime()) / 1000;
  log.info(
    `backup ${id} complete: ${formatBytes(info.sizeBytes)} (${config.compression} ${formatBytes(info.storedBytes)}), ` +
      `${info.startLsn} - ${info.stopLsn} on timeline ${info.timeline}, WAL ${startSegment} - ${stopSegment} archived, ` +
      `${secs.toFixed(1)} s, ${formatBytes(Math.round(info.sizeBytes / Math.max(secs, 0.001)))}/s`,
  );
  process.stdout.write(`${id}\n`);
  return info;
}

/**
 * An incremental names its reference's objects: written after a `walvault delete` removed the
 * reference (its backup.json goes first), its backup.json would describe a backup that cannot be
 * restored. Asked right before the sentinel is written; this narrows the race with a delete that
 * took its inventory before this backup existed, it cannot close it (the store has no locks).
 */
export async function checkReferenceStillThere(storage: Storage, config: Config, id: string, reference: string): Promise<void> {
  const key = backupKey(reference, SENTINEL_OBJECT);
  const there = await phase(config, `check ${key}`, (signal) => storage.head(key, { signal }));
  if (there) return;
  throw backupError(
    `backup ${id} failed: its reference was deleted while it ran (walvault delete?): ${storage.url}/${key} is gone; ` +
      'no backup.json was written; take the backup again',
  );
}

export function tablespacesError() {
  return backupError('the cluster has tablespaces besides pg_default and pg_global; backup-push --method stream does not support them: use --method files on the database host');
}

/** A backup of another cluster than the one archiving here would never find its WAL. */
export function checkSystem(storage: Storage, repo: RepoManifest, systemIdentifier: string): void {
  checkEncryption(repo, storage);
  if (repo.systemIdentifier === systemIdentifier) return;
  throw backupError(
    `the backed-up cluster has system identifier ${systemIdentifier} but ${storage.url} archives WAL of system ${repo.systemIdentifier}: ` +
      'point backup-push at the cluster whose archive_command writes to this repository',
  );
}

/** `base`, or base_2, base_3...: the first name under which the repository has nothing yet. */
export async function uniqueId(storage: Storage, base: string, config: Config): Promise<string> {
  for (let n = 0; ; n++) {
    const id = n === 0 ? base : `${base}_${n + 1}`;
    const taken = await phase(config, `check ${BACKUPS_PREFIX}${id}/`, async (signal) => {
      for await (const _ of storage.list(`${BACKUPS_PREFIX}${id}/`, { signal })) return true;
      return false;
    });
    if (!taken) return id;
  }
}
