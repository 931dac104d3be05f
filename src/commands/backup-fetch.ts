import { execFileSync } from 'node:child_process';
import { constants } from 'node:fs';
import { lstat, mkdir, open, readdir, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { retryPolicy, type LoadedConfig } from '../common/config.js';
import { backupError, describe as describeError, usageError } from '../common/errors.js';
import { fsyncDir } from '../common/fs-atomic.js';
import { log } from '../common/log.js';
import { Deadline } from '../common/retry.js';
import { isBackupId, listBackups, type BackupInfo } from '../backup/catalog.js';
import { checkWalCoverage } from '../backup/coverage.js';
import { buildRestoreCommand, recoverySettings, writeRecoverySettings } from '../backup/recovery-conf.js';
import { checkManifestFile, restoreData, verifyBackup, wipe } from '../backup/restore-data.js';
import { describeTarget, parseTarget, selectBackup, type TargetFlags } from '../backup/target.js';
import { openStorage } from '../storage/open.js';

// walvault backup-fetch <id|LATEST> <pgdata> [target]: picks the backup, proves the archive holds the
// WAL to get from it to the target, and only then streams GET -> decompress -> SHA-256 -> tar
// extract into an empty directory, checks the result with pg_verifybackup, and writes the recovery
// settings (restore_command = this walvault) and recovery.signal / standby.signal. Any failure
// after the first byte was written leaves the directory empty (or removes it if it created it).

export interface BackupFetchOptions extends TargetFlags {
  which: string;
  pgdata: string;
  targetAction?: string;
  targetTimeline?: string;
  standby?: boolean;
  owner?: string;
  restoreCommand?: string;
}

const ACTIONS = ['pause', 'promote', 'shutdown'];

export async function backupFetch(loaded: LoadedConfig, opts: BackupFetchOptions): Promise<number> {
  const config = loaded.config;
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
  const restoreCommand = opts.restoreCommand ?? buildRestoreCommand(loaded);
  // Refuses a control character in any value bound for postgresql.auto.conf before anything is written.
  recoverySettings(target, opts, timeline, restoreCommand);
  const pgdata = resolve(opts.pgdata);
  const created = await checkTargetDir(pgdata);
  const owner = await resolveOwner(opts.owner, pgdata, created);

  const storage = await openStorage(config);
  const abort = new AbortController();
  const onSignal = (sig: NodeJS.Signals) => {
    log.warn(`received ${sig}: stopping the restore`);
    abort.abort(backupError(`interrupted by ${sig}`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const policy = retryPolicy(config);
  try {
    // 1. Choose the backup and prove the WAL is there, before writing anything.
    const deadline = new Deadline(config.deadline * 1000);
    let backup: BackupInfo;
    try {
      const rejected = new Map<string, Error>();
      const backups = await listBackups(storage, policy, deadline, rejected);
      const named = rejected.get(opts.which);
      if (named) throw named;
      const chosen = selectBackup(backups, opts.which, target, storage.url);
      backup = chosen.backup;
      log.info(`restoring backup ${backup.id} (${chosen.why}; ended ${backup.stopTime} at ${backup.stopLsn}) to ${describeTarget(target)}`);
      const plan = await checkWalCoverage(storage, backup, target, timeline, { policy, deadline });
      log.info(
        `the archive holds all ${plan.segments} WAL segments recovery needs (${plan.firstSegment} - ${plan.lastSegment}` +
          `${plan.path.length > 1 ? `, following timelines ${plan.path.map((p) => p.tli).join(' -> ')}` : ''})`,
      );
    } finally {
      deadline.dispose();
    }

    // 2. Restore. From here on a failure empties the directory again.
    try {
      await prepareTargetDir(pgdata, created, owner);
      await restoreData(storage, config, backup, pgdata, owner, abort.signal);
      await checkManifestFile(storage, config, backup, pgdata, owner);
      await verifyBackup(config, backup, pgdata, owner);
      await writeRecoverySettings(pgdata, backup, target, opts, timeline, restoreCommand, owner);
    } catch (e) {
      await wipe(pgdata, created, owner);
      throw e;
    }
    const signalFile = opts.standby ? 'standby.signal' : 'recovery.signal';
    log.info(
      `backup ${backup.id} restored to ${pgdata} with ${signalFile}; start PostgreSQL on it to replay WAL ` +
        `${target.kind === 'none' ? 'to the end of the archive' : `to ${describeTarget(target)}${opts.targetAction ? ` and ${opts.targetAction}` : ' and pause (recovery_target_action default)'}`}`,
    );
    return 0;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    storage.close();
  }
}

/**
 * Creates (or takes) the target directory and hands it to `owner` through an open descriptor of
 * the directory itself, never by a path a link could redirect; the parent is fsynced so the new
 * entry survives a crash.
 */
async function prepareTargetDir(pgdata: string, created: boolean, owner: { uid: number; gid: number } | undefined): Promise<void> {
  if (created) await mkdir(pgdata, { mode: 0o700 });
  const fh = await open(pgdata, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  try {
    await fh.chmod(0o700);
    if (owner) await fh.chown(owner.uid, owner.gid);
    await fh.sync();
  } finally {
    await fh.close();
  }
  if (created) await fsyncDir(dirname(pgdata));
}

/** Returns true when the directory does not exist yet (and its parent does). Refuses a non-empty one. */
async function checkTargetDir(pgdata: string): Promise<boolean> {
  let st;
  try {
    st = await lstat(pgdata);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw backupError(`cannot inspect ${pgdata}: ${describeError(e)}`);
    const parent = dirname(pgdata);
    const ps = await stat(parent).catch(() => null);
    if (!ps?.isDirectory()) throw backupError(`the parent directory ${parent} of ${pgdata} does not exist`);
    return true;
  }
  if (!st.isDirectory()) throw backupError(`${pgdata} exists and is not a directory; refusing to restore into it`);
  const entries = await readdir(pgdata);
  if (entries.length > 0) {
    throw backupError(
      `${pgdata} is not empty (${entries.slice(0, 3).join(', ')}${entries.length > 3 ? ', ...' : ''}); backup-fetch restores only into an empty or new directory`,
    );
  }
  return false;
}

async function resolveOwner(spec: string | undefined, pgdata: string, created: boolean): Promise<{ uid: number; gid: number } | undefined> {
  const isRoot = process.getuid?.() === 0;
  if (spec !== undefined) {
    let ids: { uid: number; gid: number };
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
  if (!isRoot) return undefined;
  if (!created) {
    const st = await stat(pgdata);
    if (st.uid !== 0) return { uid: st.uid, gid: st.gid };
  }
  log.warn(`running as root without --owner: the restored files belong to root, and PostgreSQL will not start on them (pass --owner postgres)`);
  return undefined;
}
