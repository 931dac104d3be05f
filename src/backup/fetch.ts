import { execFileSync } from 'node:child_process';
import { lstat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { retryPolicy, type LoadedConfig } from '../common/config.js';
import { backupError, usageError } from '../common/errors.js';
import { log } from '../common/log.js';
import { Deadline } from '../common/retry.js';
import type { BackupInfo } from './backup-info.js';
import { isBackupId } from './catalog.js';
import { planFetch, requireWal, type FetchPlan } from './fetch-plan.js';
import { recordThroughput } from './restore-throughput.js';
import { buildRestoreCommand, recoverySettings, writeRecoverySettings } from './recovery-conf.js';
import { checkManifestFile, planDelta, restoreData, verifyBackup, wipe } from './restore-data.js';
import type { RestorePlan } from './file-plan.js';
import type { TargetPlan, TargetState } from './restore-target.js';
import { linkTablespaces, locateRoot, locateTablespaces, prepareRoot, prepareTablespaces, removeTablespaceRecords, rewriteTablespaceMap, tablespaceRecordPaths, wipeTablespaces, type TablespaceRoots } from './restore-roots.js';
import { chooseLocations, parseTablespaceMapFlags } from './tablespaces.js';
import { parseRecord, RECORD_NAME } from './restore-record.js';
import { removeAsOwner } from './restore-sink.js';
import type { Owner } from '../common/file-trust.js';
import { needsWorker } from './restore-worker.js';
import { describeTarget, parseTarget, type RecoveryTarget, type TargetFlags } from './target.js';
import { openRepository } from '../archive/repository.js';

// walvault backup-fetch <id|LATEST> <pgdata> [target]: picks the backup, proves the archive holds the
// WAL to get from it to the target (and, format 2, reads and checks its file list), and only then
// streams GET -> decompress -> SHA-256 -> tar extract into an empty directory (format 2: one data
// object per job, --jobs at once, restore-files.ts), checks the result with pg_verifybackup, and writes the recovery
// settings (restore_command = this walvault) and recovery.signal / standby.signal. Any failure
// after the first byte was written leaves the directory empty (or removes it if it created it).
// Format 2 also: a directory holding the progress record of an interrupted restore of the same
// backup is taken up where it stopped (restore-record.ts), and --delta restores over a stopped copy
// of the same cluster, keeping the files that match (restore-delta.ts).

export interface BackupFetchOptions extends TargetFlags {
  which: string;
  pgdata: string;
  targetAction?: string;
  targetTimeline?: string;
  standby?: boolean;
  owner?: string;
  restoreCommand?: string;
  /** Restore over an existing, stopped data directory of the same system, keeping the files that match. */
  delta?: boolean;
  /** --tablespace-map OID=DIR, repeatable. */
  tablespaceMap?: string[];
  /** Restore each tablespace not in tablespaceMap into <tablespaceBase>/<oid> (restore-test). */
  tablespaceBase?: string;
  /** The command recorded with the measured throughput. */
  command?: string;
}

const ACTIONS = ['pause', 'promote', 'shutdown'];

export interface RestoreOutcome {
  plan: FetchPlan;
  /** The symlink-free path restored to. */
  pgdata: string;
  /** Time of the restore phase (download, write, verify). */
  restoreMs: number;
}

/** The backup and target flags of backup-fetch (and of --dry-run, restore-test), checked. */
export function parseFetchRequest(opts: TargetFlags & { which: string; targetAction?: string; targetTimeline?: string }): { target: RecoveryTarget; timeline: string | undefined } {
  const target = parseTarget(opts);
  if (opts.targetAction !== undefined && !ACTIONS.includes(opts.targetAction)) {
    throw usageError(`--target-action must be one of ${ACTIONS.join(', ')}, got ${JSON.stringify(opts.targetAction)}`);
  }
  if (opts.targetAction !== undefined && target.kind === 'none') {
    throw usageError('--target-action needs a recovery target (--target-time, --target-lsn, --target-xid, --target-name or --target-immediate)');
  }
  const timeline = opts.targetTimeline?.trim().toLowerCase();
  if (timeline !== undefined && !/^(latest|current|[1-9]\d{0,9})$/.test(timeline)) {
    throw usageError(`--target-timeline must be latest, current or a timeline number, got ${JSON.stringify(opts.targetTimeline)}`);
  }
  if (opts.which.toUpperCase() !== 'LATEST' && !isBackupId(opts.which)) {
    throw usageError(`${JSON.stringify(opts.which)} is not a backup id (base_<start segment>_<yyyymmddThhmmssZ>, as backup-list shows) nor LATEST`);
  }
  return { target, timeline };
}

export async function restoreBackup(loaded: LoadedConfig, opts: BackupFetchOptions): Promise<RestoreOutcome> {
  const config = loaded.config;
  const { target, timeline } = parseFetchRequest(opts);
  const tablespaceFlags = parseTablespaceMapFlags(opts.tablespaceMap ?? []);
  const restoreCommand = opts.restoreCommand ?? buildRestoreCommand(loaded);
  // Refuses a control character in any value bound for postgresql.auto.conf before anything is written.
  recoverySettings(target, opts, timeline, restoreCommand);
  const delta = opts.delta === true;
  const { plan, state, owner } = await locateTarget(resolve(opts.pgdata), opts.owner, delta);
  const created = state.created;
  const pgdata = plan.pgdata;

  const storage = await openRepository(config);
  const abort = new AbortController();
  const onSignal = (sig: NodeJS.Signals) => {
    log.warn(`received ${sig}: stopping the restore`);
    abort.abort(backupError(`interrupted by ${sig}`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const policy = retryPolicy(config);
  let fetchPlan: FetchPlan;
  try {
    // 1. Choose the backup and prove the WAL is there, before writing anything.
    const deadline = new Deadline(config.deadline * 1000);
    let backup: BackupInfo;
    let files: RestorePlan | undefined;
    let resume: Set<string> | undefined;
    let tablespaces: TablespaceRoots;
    try {
      fetchPlan = await planFetch(storage, config, { which: opts.which, target, timeline }, { policy, deadline });
      requireWal(fetchPlan);
      backup = fetchPlan.backup;
      files = fetchPlan.files;
      if (delta && backup.format !== 2) throw usageError(`--delta needs a backup of format 2 (backup-push --method files); ${backup.id} is one tar`);
      if (delta && files && files.tablespaces.length > 0) {
        throw usageError(`--delta does not support backups with tablespaces yet; ${backup.id} has ${files.tablespaces.length}: restore it into a new directory (and new tablespace locations)`);
      }
      // --delta checks the directory and removes what differs first (a running or foreign cluster is refused before that).
      if (delta && files) files = await planDelta(files, backup, pgdata, owner);
      else if (state.record !== null) {
        const record = parseRecord(state.record, join(pgdata, RECORD_NAME));
        if (record.backup !== backup.id) {
          throw backupError(
            `${pgdata} holds an interrupted restore of backup ${record.backup}, not of ${backup.id}: run backup-fetch ${record.backup} ${pgdata} ` +
              'again to finish it, or empty the directory',
          );
        }
        resume = record.done;
      }
      // restore-test: every tablespace not mapped goes below its own directory, never to the original location.
      if (opts.tablespaceBase) for (const t of files?.tablespaces ?? []) if (!tablespaceFlags.has(t.oid)) tablespaceFlags.set(t.oid, join(opts.tablespaceBase, t.oid));
      // Every tablespace location is checked (new or empty) before anything is written.
      tablespaces = await locateTablespaces(chooseLocations(files?.tablespaces ?? [], tablespaceFlags, pgdata, backup.id), owner, backup.id, resume !== undefined);
    } finally {
      deadline.dispose();
    }

    // 2. Restore. From here on a failure empties the directory again.
    const restoreStarted = performance.now();
    try {
      await prepareRoot({ plan, ...state }, owner);
      await prepareTablespaces(tablespaces, owner);
      await restoreData(storage, config, backup, pgdata, owner, abort.signal, files, resume);
      await linkTablespaces(pgdata, tablespaces.list, owner);
      await checkManifestFile(storage, config, backup, pgdata, owner);
      await verifyBackup(config, backup, pgdata, owner, tablespaceRecordPaths(tablespaces));
      // Complete and verified: no longer something to resume.
      if (backup.format === 2) await removeAsOwner(pgdata, owner, [RECORD_NAME]);
      await removeTablespaceRecords(tablespaces, owner);
      await rewriteTablespaceMap(pgdata, tablespaces.list, owner);
      await writeRecoverySettings(pgdata, backup, target, opts, timeline, restoreCommand, owner);
    } catch (e) {
      // --delta leaves the directory for another --delta (without global/pg_control until the end, PostgreSQL does not start on it).
      if (delta) log.warn(`backup-fetch --delta did not finish: ${pgdata} is left as it is, without global/pg_control; run the same command again`);
      else {
        await wipe(pgdata, created, owner, plan.ownerHoldsParent);
        await wipeTablespaces(tablespaces!, owner);
      }
      throw e;
    }
    const restoreMs = performance.now() - restoreStarted;
    // A resumed or delta restore fetched only part of the objects: not a measure of the whole.
    if (!delta && resume === undefined) {
      await recordThroughput(config, { bytes: fetchPlan.downloadBytes, ms: restoreMs, backup: backup.id, command: opts.command ?? 'backup-fetch' });
    }
    const signalFile = opts.standby ? 'standby.signal' : 'recovery.signal';
    log.info(
      `backup ${backup.id} restored to ${pgdata} with ${signalFile}; start PostgreSQL on it to replay WAL ` +
        `${target.kind === 'none' ? 'to the end of the archive' : `to ${describeTarget(target)}${opts.targetAction ? ` and ${opts.targetAction}` : ' and pause (recovery_target_action default)'}`}`,
    );
    return { plan: fetchPlan, pgdata, restoreMs };
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    storage.close();
  }
}

/**
 * Where and how to restore. Run as root, the way to <pgdata> is checked first (restore-roots.ts):
 * what is found there is looked at by root only when root alone controls it, else by the owner's
 * worker. Returns whether <pgdata> is new, or holds an interrupted restore.
 */
async function locateTarget(given: string, spec: string | undefined, delta: boolean): Promise<{ plan: TargetPlan; state: TargetState; owner: Owner | undefined }> {
  const isRoot = process.getuid?.() === 0;
  let owner = resolveOwner(spec, isRoot);
  if (isRoot && !owner) {
    // The owner of an existing directory (a uid, no content); planTarget then checks the way to it for that uid.
    const st = await lstat(given).catch(() => null);
    if (st?.isDirectory() && st.uid !== 0) owner = { uid: st.uid, gid: st.gid };
  }
  const { plan, created, record } = await locateRoot(given, owner, isRoot, delta);
  if (isRoot && !needsWorker(owner)) log.warn(`running as root without --owner: the restored files belong to root, and PostgreSQL will not start on them (pass --owner postgres)`);
  return { plan, state: { created, record }, owner };
}

export function resolveOwner(spec: string | undefined, isRoot: boolean): Owner | undefined {
  if (spec === undefined) return undefined;
  let ids: Owner;
  const m = /^(\d+)(?::(\d+))?$/.exec(spec);
  if (m) ids = { uid: Number(m[1]), gid: Number(m[2] ?? m[1]) };
  else {
    try {
      ids = {
        uid: Number(execFileSync('id', ['-u', spec], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim()),
        gid: Number(execFileSync('id', ['-g', spec], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim()),
      };
    } catch {
      throw usageError(`--owner ${JSON.stringify(spec)}: no such user`);
    }
  }
  if (!isRoot && ids.uid !== process.getuid?.()) throw usageError('--owner needs root (the restored files would belong to another user)');
  return isRoot ? ids : undefined;
}
