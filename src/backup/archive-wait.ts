import { execFile } from 'node:child_process';
import type { Readable } from 'node:stream';
import { backupError, describe as describeError, type WalvaultError } from '../common/errors.js';
import { retryPolicy, type Config } from '../common/config.js';
import { log } from '../common/log.js';
import { Deadline } from '../common/retry.js';
import type { Storage } from '../storage/types.js';
import { segmentName, segmentNumber, segmentsPerLogId, timelineOfName } from '../wal/names.js';
import { listShard } from './coverage.js';
import { findPgProgram } from './pgbin.js';
import { phaseManifest } from './wait.js';

// pg_basebackup -X none ends its stream only once the server has seen the WAL up to the end of the
// backup archived: do_pg_backup_stop waits for archive_command with no limit, between the last data
// file (global/pg_control, always sent last) and the backup_manifest. When archiving is broken
// that wait is forever; backup-push bounds it by backupWaitTimeout and says which WAL did not come.

export interface ArchiveWaitWatch {
  stop(): void;
}

/**
 * Calls `onTimeout` once pg_basebackup has kept walvault waiting for `timeoutMs` after the data was
 * streamed (`streamed()`) and before the server released the rest (`released()`). Only time spent
 * idle on pg_basebackup's output counts: while the upload holds the stream back (source paused or
 * holding unread bytes), the server may long be done waiting.
 */
export function watchArchiveWait(o: {
  source: Readable;
  streamed: () => boolean;
  released: () => boolean;
  timeoutMs: number;
  onTimeout: () => void;
}): ArchiveWaitWatch {
  const TICK = 250;
  let idle = 0;
  const t = setInterval(() => {
    if (o.released()) return stop();
    if (!o.streamed()) return;
    if (o.source.readableFlowing === false || o.source.readableLength > 0) return;
    idle += TICK;
    if (idle >= o.timeoutMs) {
      stop();
      o.onTimeout();
    }
  }, TICK);
  function stop(): void {
    clearInterval(t);
  }
  return { stop };
}

/**
 * The error for an archive wait that timed out: the first WAL segment from the backup's start that
 * is not in the repository (archiving goes in order, so that is the one that did not arrive), and
 * what pg_stat_archiver says about the last failure when the server answers.
 */
export async function archiveWaitError(
  storage: Storage,
  config: Config,
  startSegment: string | undefined,
  dbname: string | undefined,
): Promise<WalvaultError> {
  const [missing, archiver] = await Promise.all([
    startSegment === undefined
      ? undefined
      : firstMissingSegment(storage, config, startSegment).catch((e: unknown) => {
          log.warn(`cannot list the archived WAL after ${startSegment}: ${describeError(e)}`);
          return undefined;
        }),
    archiverStatus(config, dbname),
  ]);
  const which = missing ? `WAL segment ${missing}` : startSegment ? `the WAL from ${startSegment} on` : 'the WAL up to the end of the backup';
  return backupError(
    `${which} was not archived to ${storage.url} within ${config.backupWaitTimeout}s after the data was streamed (backupWaitTimeout): ` +
      `pg_basebackup waits until the server has archived the WAL up to the end of the backup, and archiving is failing or behind` +
      `${archiver ? `; ${archiver}` : ''}. pg_basebackup was stopped and the backup was not recorded; ` +
      'fix archive_command (see the server log) and run backup-push again',
  );
}

/** Archived segments are listed one shard (timeline + log id) at a time; this many shards at most. */
const MAX_SHARDS = 64;

async function firstMissingSegment(storage: Storage, config: Config, startSegment: string): Promise<string | undefined> {
  const repo = await phaseManifest(storage, config);
  if (!repo) return startSegment;
  const segSize = repo.walSegmentSize;
  const tli = timelineOfName(startSegment);
  const per = segmentsPerLogId(segSize);
  const deadline = new Deadline(config.deadline * 1000);
  try {
    let segno = segmentNumber(startSegment, segSize);
    for (let i = 0; i < MAX_SHARDS; i++) {
      const shardLog = segno / per;
      const names = await listShard(storage, tli, shardLog, retryPolicy(config), deadline);
      for (; segno / per === shardLog; segno++) {
        const name = segmentName(tli, segno, segSize);
        if (!names.has(name)) return name;
      }
    }
    return undefined;
  } finally {
    deadline.dispose();
  }
}

const ARCHIVER_SQL =
  "SELECT coalesce(last_failed_wal, ''), coalesce(to_char(last_failed_time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), ''), " +
  "failed_count, coalesce(last_archived_wal, '') FROM pg_stat_archiver";
const PSQL_TIMEOUT_MS = 10_000;

/**
 * pg_stat_archiver's last failure, through psql (found like pg_basebackup, same connection
 * settings), within PSQL_TIMEOUT_MS; undefined when there is no psql or the server does not answer.
 */
export async function archiverStatus(config: Config, dbname: string | undefined): Promise<string | undefined> {
  let bin: string | undefined;
  try {
    bin = findPgProgram('psql', config.pgBinDir);
  } catch {
    bin = undefined;
  }
  if (!bin) return undefined;
  const args = ['-X', '-A', '-t', '-q', '--no-password', '-v', 'ON_ERROR_STOP=1', '-c', ARCHIVER_SQL];
  if (dbname) args.push('--dbname', dbname);
  const out = await new Promise<string | undefined>((resolve) => {
    execFile(
      bin,
      args,
      { timeout: PSQL_TIMEOUT_MS, killSignal: 'SIGKILL', env: { ...process.env, PGCONNECT_TIMEOUT: process.env['PGCONNECT_TIMEOUT'] ?? '5' } },
      (err, stdout, stderr) => {
        if (err) {
          log.debug(`cannot read pg_stat_archiver: ${String(stderr).trim() || err.message}`);
          resolve(undefined);
        } else resolve(String(stdout).trim());
      },
    );
  });
  if (!out) return undefined;
  const [failedWal = '', failedTime = '', failedCount = '0', archivedWal = ''] = out.split('|');
  const last = archivedWal ? `, last archived ${archivedWal}` : '';
  if (!failedWal) return `pg_stat_archiver records no failed archive_command${last}`;
  return `pg_stat_archiver: last_failed_wal ${failedWal} at ${failedTime} UTC (${failedCount} failures${last})`;
}
