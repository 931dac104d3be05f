import type { Config } from '../common/config.js';
import { backupError, describe as describeError, isWalvaultError, type WalvaultError } from '../common/errors.js';
import { log } from '../common/log.js';
import { connectClient, endClient, sendCancel, type PgError } from './pg-connect.js';
import { describeTarget, resolveConnParams } from './pg-conninfo.js';

// The SQL session of a file-level backup-push: pg_backup_start, the caller copies the data directory,
// pg_backup_stop. Since PostgreSQL 15 only non-exclusive backups exist, and a non-exclusive backup
// belongs to the session that started it: pg_backup_stop must run on the same connection, and if that
// connection ends (network, idle_session_timeout, a crash of backup-push) the server aborts the
// backup. So one connection is held from start to stop, with TCP keepalives and no idle timeout.

export interface BackupSession {
  dataDirectory: string;
  systemIdentifier: string;
  /** Major version: server_version_num / 10000. */
  serverVersion: number;
  inRecovery: boolean;
  start(label: string, fast: boolean, signal?: AbortSignal): Promise<{ startLsn: string }>;
  stop(signal?: AbortSignal): Promise<{ stopLsn: string; backupLabel: string; tablespaceMap: string }>;
  /** A standby's primary_conninfo, or undefined (a primary, empty, or not readable by this user). */
  primaryConninfo(signal?: AbortSignal): Promise<string | undefined>;
  close(): Promise<void>;
}

/**
 * The SQL for a major version: pg_backup_start/pg_backup_stop since 15 (the exclusive mode and the
 * old names are gone); pg_start_backup(label, fast, exclusive => false) and pg_stop_backup(exclusive
 * => false, wait_for_archive => false) on 10-14. wait_for_archive is false because backup-push waits
 * for the archive itself (with its own timeout and messages), not inside a cancellable SQL call.
 */
export function backupSql(major: number): { start: string; stop: string } {
  if (major >= 15) {
    return {
      start: 'SELECT pg_backup_start($1, $2)::text AS lsn',
      stop: 'SELECT lsn::text AS lsn, labelfile, spcmapfile FROM pg_backup_stop(false)',
    };
  }
  return {
    start: 'SELECT pg_start_backup($1, $2, false)::text AS lsn',
    stop: 'SELECT lsn::text AS lsn, labelfile, spcmapfile FROM pg_stop_backup(false, false)',
  };
}

export interface SessionOptions {
  signal?: AbortSignal;
  /** The environment the PG* variables are read from (default process.env). */
  env?: NodeJS.ProcessEnv;
}

/** Connects like pg_basebackup would: --dbname (URI, key=value conninfo or a database name), else PG* environment. */
export async function openBackupSession(_config: Config, dbname: string | undefined, opts: SessionOptions = {}): Promise<BackupSession> {
  const env = opts.env ?? process.env;
  const params = resolveConnParams(dbname, env);
  const client = await connectClient(params, env, opts.signal);
  let lost: Error | undefined;
  client.on('error', (e) => (lost ??= e));
  client.on('end', () => (lost ??= new Error('the connection was closed')));
  // e.g. pg_backup_stop's "WAL archiving is enabled; you must ensure that all required WAL segments
  // are copied": backup-push waits for the archive itself.
  client.on('notice', (n) => log.debug(`PostgreSQL: ${n.message}`));
  const where = describeTarget(params);
  const sql = async (text: string, values: unknown[], what: string, signal?: AbortSignal): Promise<Record<string, unknown>> => {
    if (lost) throw sessionLost(where, lost);
    signal?.throwIfAborted();
    // Set by node-postgres from BackendKeyData; not in its type definitions.
    const { processID: pid, secretKey: key } = client as unknown as { processID: number | null; secretKey: number | null };
    let onAbort: (() => void) | undefined;
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => {
        if (pid !== null && key !== null) sendCancel(params, pid, key);
        reject(signal!.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
    });
    aborted.catch(() => undefined);
    try {
      const r = await Promise.race([client.query(text, values), aborted]);
      return (r.rows[0] ?? {}) as Record<string, unknown>;
    } catch (e) {
      if (signal?.aborted) throw signal.reason;
      if (lost) throw sessionLost(where, lost);
      throw queryError(e, what, where);
    } finally {
      if (onAbort) signal?.removeEventListener('abort', onAbort);
    }
  };
  try {
    // No conversion: data_directory and backup_label are bytes from the file system and the server,
    // not text in the database's encoding. node-postgres asks for UTF8, so from a LATIN1 database the
    // server would re-encode the UTF-8 bytes of "/srv/dätä" as if they were LATIN1 characters.
    await sql("SET client_encoding = 'SQL_ASCII'", [], 'setting client_encoding', opts.signal);
    const info = await sql(
      "SELECT current_setting('server_version_num')::int AS v, current_setting('data_directory') AS d, pg_is_in_recovery() AS r, (SELECT system_identifier::text FROM pg_control_system()) AS s",
      [],
      'reading the server settings',
      opts.signal,
    );
    const num = info['v'] as number;
    if (num < 100000) throw backupError(`PostgreSQL ${Math.floor(num / 10000)}.${Math.floor(num / 100) % 100} at ${where} is not supported; walvault backup-push needs PostgreSQL 10 or later`);
    const serverVersion = Math.floor(num / 10000);
    // A backup may take hours between start and stop, and the session must survive them.
    if (serverVersion >= 14) await sql('SET idle_session_timeout = 0', [], 'disabling idle_session_timeout', opts.signal);
    const q = backupSql(serverVersion);
    let started = false;
    return {
      dataDirectory: info['d'] as string,
      systemIdentifier: info['s'] as string,
      serverVersion,
      inRecovery: info['r'] === true,
      async start(label, fast, signal) {
        const row = await sql(q.start, [label, fast], serverVersion >= 15 ? 'pg_backup_start' : 'pg_start_backup', signal);
        started = true;
        return { startLsn: row['lsn'] as string };
      },
      async stop(signal) {
        if (!started) throw backupError('internal: stop() before start() on the backup session');
        const row = await sql(q.stop, [], serverVersion >= 15 ? 'pg_backup_stop' : 'pg_stop_backup', signal);
        started = false;
        return { stopLsn: row['lsn'] as string, backupLabel: (row['labelfile'] as string | null) ?? '', tablespaceMap: (row['spcmapfile'] as string | null) ?? '' };
      },
      async primaryConninfo(signal) {
        // Superuser or pg_read_all_settings only: anyone else gets undefined, not a failed backup.
        const row = await sql("SELECT current_setting('primary_conninfo') AS c", [], 'reading primary_conninfo', signal).catch((e: unknown) => {
          log.debug(`cannot read primary_conninfo: ${describeError(e)}`);
          return {} as Record<string, unknown>;
        });
        const c = row['c'];
        return typeof c === 'string' && c.trim() !== '' ? c : undefined;
      },
      async close() {
        if (started) log.debug('closing the PostgreSQL session before pg_backup_stop: the server aborts the backup');
        await endClient(client);
      },
    };
  } catch (e) {
    await endClient(client);
    throw e;
  }
}

function sessionLost(where: string, e: Error): WalvaultError {
  return backupError(`the PostgreSQL session to ${where} ended (${e.message}); the server aborts a backup whose session ends, so this backup cannot complete`, { cause: e });
}

function queryError(e: unknown, what: string, where: string): WalvaultError {
  if (isWalvaultError(e)) return e;
  const err = e as PgError;
  let msg = `${what} failed on ${where}: ${describeError(e)}`;
  if (err.code === '42501') msg += ' (connect as a superuser, or grant this user pg_read_all_settings and EXECUTE on the backup start and stop functions)';
  else if (err.hint) msg += ` (${err.hint})`;
  return backupError(msg, { cause: e });
}
