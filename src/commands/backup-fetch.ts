import { execFile, execFileSync } from 'node:child_process';
import { constants } from 'node:fs';
import { appendFile, chmod, chown, lstat, mkdir, open, readdir, readFile, rm, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { decompressStream, parseCodec } from '../codec/codec.js';
import { retryPolicy, type Config, type LoadedConfig } from '../common/config.js';
import {
  backupError,
  describe as describeError,
  ExitCode,
  integrityError,
  isWalvaultError,
  usageError,
  WalvaultError,
} from '../common/errors.js';
import { fsyncDir } from '../common/fs-atomic.js';
import { HashingStream, sha256Hex } from '../common/hash.js';
import { formatBytes, log } from '../common/log.js';
import { Deadline, withRetry } from '../common/retry.js';
import { SETTINGS } from '../common/settings.js';
import { backupKey, DATA_OBJECT, listBackups, MANIFEST_OBJECT, type BackupInfo } from '../backup/catalog.js';
import { checkWalCoverage } from '../backup/coverage.js';
import { findPgProgram } from '../backup/pgbin.js';
import { Progress } from '../backup/progress.js';
import { createExtractor } from '../backup/tar.js';
import { describeTarget, parseTarget, selectBackup, type RecoveryTarget, type TargetFlags } from '../backup/target.js';
import { openStorage } from '../storage/open.js';
import type { Storage } from '../storage/types.js';

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
  const pgdata = resolve(opts.pgdata);
  const created = await checkTargetDir(pgdata);
  const owner = await resolveOwner(opts.owner, pgdata, created);
  const restoreCommand = opts.restoreCommand ?? buildRestoreCommand(loaded);

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
      const backups = await listBackups(storage, policy, deadline);
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
      if (created) await mkdir(pgdata, { mode: 0o700 });
      await chmod(pgdata, 0o700);
      if (owner) await chown(pgdata, owner.uid, owner.gid);
      await restoreData(storage, config, backup, pgdata, owner, abort.signal);
      await checkManifestFile(storage, config, backup, pgdata, owner);
      await verifyBackup(config, backup, pgdata);
      await writeRecoverySettings(pgdata, backup, target, opts, timeline, restoreCommand, owner);
    } catch (e) {
      await wipe(pgdata, created);
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

/** Settings wal-fetch has no use for; spool: the server's own user has its own cache directory. */
const NOT_FOR_WAL_FETCH = new Set(['spool', 'backupWaitTimeout', 'backupStaleUploadAge', 'pgBinDir', 's3PartSize', 's3QueueSize']);

/**
 * The restore_command the restored server runs as its own user: this Node and this walvault
 * bundle by absolute path, the config file if one was used, and every non-secret setting that came
 * from a flag or the environment (PostgreSQL does not pass the operator's environment on).
 */
export function buildRestoreCommand(loaded: LoadedConfig, execPath = process.execPath, script = process.argv[1] ?? ''): string {
  const parts = [execPath, resolve(script)];
  if (loaded.configFile) parts.push('--config', resolve(loaded.configFile));
  const secrets: string[] = [];
  for (const def of SETTINGS) {
    const src = loaded.sources[def.key];
    if (!src || (src.source !== 'flag' && src.source !== 'env')) continue;
    if (NOT_FOR_WAL_FETCH.has(def.key)) continue;
    const value = (loaded.config as unknown as Record<string, unknown>)[def.key];
    if (value === undefined) continue;
    if (def.secret) {
      secrets.push(src.from ?? def.key);
      continue;
    }
    parts.push(`--${def.flag}=${String(value)}`);
  }
  if (secrets.length > 0) {
    log.warn(
      `credentials came from ${secrets.join(', ')}, which restore_command does not carry (it is stored in postgresql.auto.conf): ` +
        "the restored server must find them itself (a --config file readable by its user, or that user's ~/.aws)",
    );
  }
  // %f / %p are PostgreSQL's; a literal % in our arguments must be written %%.
  return [...parts.map((p) => shellQuote(p).replace(/%/g, '%%')), 'wal-fetch', '%f', '%p'].join(' ');
}

export function shellQuote(s: string): string {
  return /^[A-Za-z0-9_/.:=@%+,-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** A postgresql.conf string literal. */
export function confQuote(s: string): string {
  return `'${s.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

async function restoreData(
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
      const hashing = new HashingStream();
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
async function checkManifestFile(
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

async function verifyBackup(config: Config, backup: BackupInfo, pgdata: string): Promise<void> {
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

export function recoverySettings(
  target: RecoveryTarget,
  opts: { targetAction?: string },
  timeline: string | undefined,
  restoreCommand: string,
): Array<[string, string]> {
  const s: Array<[string, string]> = [['restore_command', restoreCommand]];
  switch (target.kind) {
    case 'time':
      s.push(['recovery_target_time', target.pg]);
      break;
    case 'lsn':
      s.push(['recovery_target_lsn', target.lsn]);
      break;
    case 'xid':
      s.push(['recovery_target_xid', target.xid]);
      break;
    case 'name':
      s.push(['recovery_target_name', target.name]);
      break;
    case 'immediate':
      s.push(['recovery_target', 'immediate']);
      break;
    case 'none':
      break;
  }
  if (opts.targetAction) s.push(['recovery_target_action', opts.targetAction]);
  if (timeline) s.push(['recovery_target_timeline', timeline]);
  return s;
}

async function writeRecoverySettings(
  pgdata: string,
  backup: BackupInfo,
  target: RecoveryTarget,
  opts: BackupFetchOptions,
  timeline: string | undefined,
  restoreCommand: string,
  owner: { uid: number; gid: number } | undefined,
): Promise<void> {
  const autoConf = join(pgdata, 'postgresql.auto.conf');
  const lines = [
    '',
    `# Added by walvault backup-fetch ${backup.id} at ${new Date().toISOString()}`,
    ...recoverySettings(target, opts, timeline, restoreCommand).map(([k, v]) => `${k} = ${confQuote(v)}`),
    '',
  ];
  await appendFile(autoConf, lines.join('\n'), { mode: 0o600 });
  const signalFile = join(pgdata, opts.standby ? 'standby.signal' : 'recovery.signal');
  const fh = await open(signalFile, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
  await fh.sync();
  await fh.close();
  const conf = await open(autoConf, 'r+');
  await conf.sync();
  await conf.close();
  if (owner) {
    await chown(autoConf, owner.uid, owner.gid);
    await chown(signalFile, owner.uid, owner.gid);
  }
  await fsyncDir(pgdata);
  log.info(`wrote restore_command${target.kind === 'none' ? '' : ' and the recovery target'} to ${autoConf}: restore_command = ${restoreCommand}`);
}

/** Leaves nothing behind: removes a directory we created, or empties one that was empty before. */
async function wipe(pgdata: string, created: boolean): Promise<void> {
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

