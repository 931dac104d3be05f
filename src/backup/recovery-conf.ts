import { join, resolve } from 'node:path';
import type { LoadedConfig } from '../common/config.js';
import { controlChar } from '../common/control-chars.js';
import { configError, usageError } from '../common/errors.js';
import { log } from '../common/log.js';
import { stripUserInfo } from '../common/redact.js';
import { SETTINGS } from '../common/settings.js';
import type { BackupInfo } from './backup-info.js';
import type { Owner } from '../common/file-trust.js';
import { writeAsOwner } from './restore-worker.js';
import type { RecoveryTarget } from './target.js';

// What backup-fetch writes so the restored server recovers on its own: restore_command (this walvault
// running wal-fetch) and the recovery target appended to postgresql.auto.conf, and recovery.signal or
// standby.signal.

/** Settings wal-fetch has no use for; spool: the server's own user has its own cache directory. */
const NOT_FOR_WAL_FETCH = new Set(['spool', 'backupWaitTimeout', 'backupStaleUploadAge', 'pgBinDir', 's3PartSize', 's3QueueSize']);

/**
 * The restore_command the restored server runs as its own user: this Node and this walvault
 * bundle by absolute path, the config file if one was used, and every non-secret setting that came
 * from a flag or the environment (PostgreSQL does not pass the operator's environment on).
 */
export function buildRestoreCommand(loaded: LoadedConfig, execPath = process.execPath, script = process.argv[1] ?? ''): string {
  const parts = [confSafe(execPath, 'the path of node', configError), confSafe(resolve(script), 'the path of walvault', configError)];
  if (loaded.configFile) parts.push('--config', confSafe(resolve(loaded.configFile), 'the config file path (--config or WALVAULT_CONFIG)', configError));
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
    const fail = src.source === 'flag' ? usageError : configError;
    // A URL's user-info (user:password@) never goes into restore_command: it is stored in plain text.
    const text = stripUserInfo(confSafe(String(value), src.from ?? def.key, fail));
    if (text !== String(value)) secrets.push(`the user-info of ${src.from ?? def.key}`);
    parts.push(`--${def.flag}=${text}`);
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

/** `value`, or `fail` when it holds a control character (it is bound for postgresql.auto.conf). */
export function confSafe(value: string, what: string, fail: (m: string) => Error = usageError): string {
  // postgresql.conf has no escape for a line break inside a string: a newline in a value would end
  // the setting and start a new line of configuration.
  const code = controlChar(value);
  if (code) {
    throw fail(`${what} contains a control character (${code}); it cannot be written to postgresql.auto.conf`);
  }
  return value;
}

export function shellQuote(s: string): string {
  return /^[A-Za-z0-9_/.:=@%+,-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** A postgresql.conf string literal. */
export function confQuote(s: string): string {
  return `'${s.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
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
  // Every value here comes from a flag (or from a restore_command already checked setting by setting).
  for (const [k, v] of s) confSafe(v, k === 'restore_command' ? 'restore_command (--restore-command)' : `${k} (--${k.replace(/^recovery_/, '').replace(/_/g, '-')})`);
  return s;
}

export async function writeRecoverySettings(
  pgdata: string,
  backup: BackupInfo,
  target: RecoveryTarget,
  opts: { targetAction?: string; standby?: boolean },
  timeline: string | undefined,
  restoreCommand: string,
  owner: Owner | undefined,
): Promise<void> {
  const autoConf = join(pgdata, 'postgresql.auto.conf');
  const lines = [
    '',
    `# Added by walvault backup-fetch ${backup.id} at ${new Date().toISOString()}`,
    ...recoverySettings(target, opts, timeline, restoreCommand).map(([k, v]) => `${k} = ${confQuote(v)}`),
    '',
  ];
  // As the data directory's owner, never through a link (restore-worker.ts, pgdata-files.ts).
  const signalFile = opts.standby ? 'standby.signal' : 'recovery.signal';
  await writeAsOwner(pgdata, owner, [
    { name: 'postgresql.auto.conf', data: Buffer.from(lines.join('\n')).toString('base64'), append: true },
    { name: signalFile, data: '' },
  ]);
  log.info(`wrote restore_command${target.kind === 'none' ? '' : ' and the recovery target'} to ${autoConf}: restore_command = ${restoreCommand}`);
}
