import { createReadStream, readFileSync, statSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { ConnectionOptions } from 'node:tls';
import pg from 'pg';
import * as pgpass from 'pgpass/lib/helper.js';
import { backupError, configError, describe as describeError, isWalvaultError, type WalvaultError } from '../common/errors.js';
import { log } from '../common/log.js';
import { describeTarget, type ConnParams } from './pg-conninfo.js';

// Opening (and closing, and cancelling on) one node-postgres connection with the parameters
// pg-conninfo.ts resolved, the way libpq would: TLS attempts by sslmode, the password file only when
// the server asks for a password, connect_timeout for the whole handshake, one-line errors that name
// the server and user but never the password.

export const APPLICATION_NAME = 'walvault backup-push';

export type PgError = Error & { code?: string; severity?: string; hint?: string; detail?: string };

/**
 * node-postgres fills every setting it is not given a truthy value for from process.env (PGREPLICATION
 * would make this a replication connection, PGCLIENT_ENCODING would change how it decodes,
 * PGSSLNEGOTIATION=direct makes the constructor throw); the parameters were resolved already, so the
 * client is built with those variables hidden. Synchronous: nothing else runs meanwhile.
 */
const PG_ENV_READ_BY_NODE_POSTGRES = ['PGREPLICATION', 'PGBINARY', 'PGCLIENT_ENCODING', 'PGSSLNEGOTIATION', 'PGOPTIONS', 'PGAPPNAME', 'PGSSLMODE', 'PGCONNECT_TIMEOUT', 'PGHOST', 'PGPORT', 'PGUSER', 'PGDATABASE', 'PGPASSWORD'];

export function newClient(cfg: pg.ClientConfig): pg.Client {
  const saved = new Map<string, string>();
  for (const k of PG_ENV_READ_BY_NODE_POSTGRES) {
    const v = process.env[k];
    if (v !== undefined) {
      saved.set(k, v);
      delete process.env[k];
    }
  }
  try {
    return new pg.Client(cfg);
  } finally {
    for (const [k, v] of saved) process.env[k] = v;
  }
}

export async function endClient(client: pg.Client): Promise<void> {
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
export function sendCancel(p: ConnParams, pid: number, secretKey: number): void {
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

export async function connectClient(p: ConnParams, env: NodeJS.ProcessEnv, signal?: AbortSignal): Promise<pg.Client> {
  const where = describeTarget(p);
  const attempts = tlsAttempts(p, env);
  let lastError: unknown;
  for (const [i, ssl] of attempts.entries()) {
    signal?.throwIfAborted();
    let noPassword = false;
    const client = newClient({
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
