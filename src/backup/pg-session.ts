import { createReadStream, readFileSync, statSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { ConnectionOptions } from 'node:tls';
import pg from 'pg';
import * as pgpass from 'pgpass/lib/helper.js';
import type { Config } from '../common/config.js';
import { backupError, configError, describe as describeError, isWalvaultError, type WalvaultError } from '../common/errors.js';
import { log } from '../common/log.js';
import { describeTarget, resolveConnParams, type ConnParams } from './pg-conninfo.js';

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
  close(): Promise<void>;
}

export const APPLICATION_NAME = 'walvault backup-push';

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

type PgError = Error & { code?: string; severity?: string; hint?: string; detail?: string };

function queryError(e: unknown, what: string, where: string): WalvaultError {
  if (isWalvaultError(e)) return e;
  const err = e as PgError;
  let msg = `${what} failed on ${where}: ${describeError(e)}`;
  if (err.code === '42501') msg += ' (connect as a superuser, or GRANT EXECUTE on the backup functions and pg_read_all_settings to this user)';
  else if (err.hint) msg += ` (${err.hint})`;
  return backupError(msg, { cause: e });
}

async function endClient(client: pg.Client): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const ended = client.end().catch(() => undefined);
  const timeout = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      (client as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
      resolve();
    }, 5000);
  });
  await Promise.race([ended, timeout]);
  clearTimeout(timer);
}

/** PostgreSQL's CancelRequest, on its own connection: what libpq's PQcancel sends. */
function sendCancel(p: ConnParams, pid: number, secretKey: number): void {
  const msg = Buffer.alloc(16);
  msg.writeInt32BE(16, 0);
  msg.writeInt32BE(80877102, 4);
  msg.writeInt32BE(pid, 8);
  msg.writeInt32BE(secretKey, 12);
  const sock = p.host.startsWith('/') ? netConnect(`${p.host}/.s.PGSQL.${p.port}`) : netConnect(p.port, p.host);
  sock.on('error', (e) => log.debug(`cannot send the cancel request: ${e.message}`));
  sock.setTimeout(10_000, () => sock.destroy());
  sock.on('connect', () => sock.end(msg));
}

type Tls = false | ConnectionOptions;

/** The TLS attempts libpq makes for an sslmode, in order; a socket connection never uses TLS. */
function tlsAttempts(p: ConnParams, env: NodeJS.ProcessEnv): Tls[] {
  if (p.host.startsWith('/') || p.sslmode === 'disable') return [false];
  const home = env['HOME'] || safeHome();
  const file = (path: string | undefined, dflt: string, required: boolean): Buffer | undefined => {
    const f = path ?? (home ? join(home, '.postgresql', dflt) : undefined);
    if (!f) return undefined;
    try {
      return readFileSync(f);
    } catch (e) {
      if (required || path !== undefined) throw configError(`cannot read the SSL file ${f}: ${(e as NodeJS.ErrnoException).code ?? describeError(e)}`);
      return undefined;
    }
  };
  const base: ConnectionOptions = {};
  const cert = file(p.sslcert, 'postgresql.crt', false);
  if (cert) {
    base.cert = cert;
    base.key = file(p.sslkey, 'postgresql.key', true);
  }
  const verify = p.sslmode === 'verify-ca' || p.sslmode === 'verify-full' || (p.sslmode === 'require' && p.sslrootcert !== undefined);
  if (!verify) {
    const noVerify: ConnectionOptions = { ...base, rejectUnauthorized: false };
    if (p.sslmode === 'require') return [noVerify];
    return p.sslmode === 'prefer' ? [noVerify, false] : [false, noVerify];
  }
  const tls: ConnectionOptions = { ...base, rejectUnauthorized: true };
  if (p.sslrootcert !== 'system') tls.ca = file(p.sslrootcert, 'root.crt', true);
  if (p.sslmode !== 'verify-full' && p.sslrootcert !== 'system') tls.checkServerIdentity = () => undefined;
  return [tls];
}

function safeHome(): string | undefined {
  try {
    return homedir() || undefined;
  } catch {
    return undefined;
  }
}

/** The password file libpq reads (passfile, PGPASSFILE, ~/.pgpass), through pgpass's matcher. */
function passwordFromFile(p: ConnParams, env: NodeJS.ProcessEnv): Promise<string | undefined> {
  const home = env['HOME'] || safeHome();
  const file = p.passfile ?? (home ? join(home, '.pgpass') : undefined);
  if (!file) return Promise.resolve(undefined);
  let st;
  try {
    st = statSync(file);
  } catch {
    return Promise.resolve(undefined);
  }
  pgpass.warnTo(new Writable({ write: (chunk, _enc, cb) => (log.warn(String(chunk).trim()), cb()) }));
  if (!pgpass.usePgPass(st, file)) return Promise.resolve(undefined);
  // libpq matches a connection through the default socket directory as "localhost".
  const host = p.host === '/var/run/postgresql' || p.host === '/tmp' ? 'localhost' : p.host;
  return new Promise((resolve) => pgpass.getPassword({ host, port: p.port, database: p.database, user: p.user }, createReadStream(file), resolve));
}

async function connectClient(p: ConnParams, env: NodeJS.ProcessEnv, signal?: AbortSignal): Promise<pg.Client> {
  const where = describeTarget(p);
  const attempts = tlsAttempts(p, env);
  let lastError: unknown;
  for (const [i, ssl] of attempts.entries()) {
    signal?.throwIfAborted();
    let noPassword = false;
    const client = new pg.Client({
      host: p.host,
      port: p.port,
      user: p.user,
      database: p.database,
      // Called only when the server asks for one: then the password file, like libpq.
      password: async () => {
        const pw = p.password ?? (await passwordFromFile(p, env));
        if (pw === undefined) noPassword = true;
        return pw;
      },
      ssl,
      application_name: p.applicationName ?? p.fallbackApplicationName ?? APPLICATION_NAME,
      ...(p.options ? { options: p.options } : {}),
      connectionTimeoutMillis: p.connectTimeout * 1000,
      keepAlive: true,
      keepAliveInitialDelayMillis: 60_000,
    } as pg.ClientConfig);
    // Errors after a failed connect would otherwise be an unhandled 'error' event.
    client.on('error', () => undefined);
    const onAbort = () => (client as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      await client.connect();
      client.removeAllListeners('error');
      return client;
    } catch (e) {
      await endClient(client);
      signal?.throwIfAborted();
      lastError = noPassword ? new Error('the server asked for a password and none was given (--dbname password=, PGPASSWORD or ~/.pgpass)') : e;
      const msg = describeError(e);
      const retry = i + 1 < attempts.length && (ssl ? /does not support SSL/.test(msg) : (e as PgError).code === '28000');
      if (!retry) break;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }
  throw connectError(lastError, where, p.connectTimeout);
}

function connectError(e: unknown, where: string, timeoutS: number): WalvaultError {
  if (isWalvaultError(e)) return e;
  const err = e as PgError & { errno?: number };
  let why = describeError(e);
  if (/timeout expired/.test(why)) why = `no answer within ${timeoutS} s (connect_timeout / PGCONNECT_TIMEOUT)`;
  else if (err.code === 'ECONNREFUSED') why = 'connection refused (is the server running and accepting TCP/IP or socket connections there?)';
  else if (err.code === 'ENOENT') why = 'no server socket there';
  else if (err.code === 'ENOTFOUND' || err.code === 'EAI_AGAIN') why = 'unknown host name';
  return backupError(`cannot connect to PostgreSQL at ${where}: ${why.replace(/[\r\n]+/g, ' ')}`, { cause: e });
}
