import { existsSync } from 'node:fs';
import { userInfo } from 'node:os';
import { configError } from '../common/errors.js';
import { CONNECT_TIMEOUT_S } from './pg-basebackup.js';

// backup-push's SQL session connects the way pg_basebackup (libpq) would: --dbname is a libpq
// "dbname" value, i.e. a URI (postgres://...), a key=value conninfo string, or a bare database name;
// every key it leaves out comes from the PG* environment, then libpq's defaults. node-postgres reads
// only part of that environment (no PGSSLROOTCERT, PGPASSFILE, a TCP 'localhost' default instead of
// the socket directory), so the parameters are resolved here, once, and handed to it explicitly.
// Nothing here may put a password (or the conninfo text, which may hold one) into an error message.

export interface ConnParams {
  /** A host name, an IP address, or an absolute socket directory. */
  host: string;
  port: number;
  user: string;
  database: string;
  password?: string;
  passfile?: string;
  sslmode: 'disable' | 'allow' | 'prefer' | 'require' | 'verify-ca' | 'verify-full';
  sslrootcert?: string;
  sslcert?: string;
  sslkey?: string;
  applicationName?: string;
  fallbackApplicationName?: string;
  /** Seconds; 0 = wait forever (libpq's meaning). */
  connectTimeout: number;
  options?: string;
}

/** libpq keywords walvault honours; the values of every other libpq keyword would be silently wrong. */
const SUPPORTED = new Set([
  'host', 'port', 'user', 'dbname', 'password', 'passfile', 'sslmode', 'sslrootcert', 'sslcert', 'sslkey',
  'application_name', 'fallback_application_name', 'connect_timeout', 'options', 'keepalives',
  'keepalives_idle', 'keepalives_interval', 'keepalives_count', 'target_session_attrs', 'client_encoding',
]);
const LIBPQ_ONLY = new Set([
  'hostaddr', 'service', 'sslpassword', 'sslcrl', 'sslcrldir', 'sslsni', 'sslcompression', 'sslnegotiation',
  'requirepeer', 'ssl_min_protocol_version', 'ssl_max_protocol_version', 'gssencmode', 'krbsrvname', 'gsslib',
  'gssdelegation', 'channel_binding', 'replication', 'tcp_user_timeout', 'load_balance_hosts', 'require_auth',
]);
const SSLMODES = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'] as const;

/** libpq's conninfo grammar: key = value pairs; a value is a bare word or '...' with \' and \\ escapes. */
export function parseKeyValueConninfo(text: string): Map<string, string> {
  const out = new Map<string, string>();
  let i = 0;
  const ws = () => {
    while (i < text.length && /\s/.test(text[i]!)) i++;
  };
  for (;;) {
    ws();
    if (i >= text.length) return out;
    const keyStart = i;
    while (i < text.length && text[i] !== '=' && !/\s/.test(text[i]!)) i++;
    const key = text.slice(keyStart, i);
    ws();
    if (text[i] !== '=') throw configError(`--dbname: missing "=" after ${JSON.stringify(key.slice(0, 40))} in the connection string`);
    i++;
    ws();
    let value = '';
    if (text[i] === "'") {
      i++;
      for (;;) {
        if (i >= text.length) throw configError(`--dbname: unterminated quoted value for ${JSON.stringify(key)} in the connection string`);
        const c = text[i]!;
        if (c === '\\' && i + 1 < text.length) {
          value += text[i + 1];
          i += 2;
        } else if (c === "'") {
          i++;
          break;
        } else {
          value += c;
          i++;
        }
      }
    } else {
      while (i < text.length && !/\s/.test(text[i]!)) {
        if (text[i] === '\\' && i + 1 < text.length) {
          value += text[i + 1];
          i += 2;
        } else value += text[i++];
      }
    }
    out.set(key, value);
  }
}

function decode(s: string, what: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw configError(`--dbname: bad percent-encoding in the URI's ${what}`);
  }
}

/** postgres[ql]://[user[:password]@][host][:port][/dbname][?key=value&...] (one host only). */
export function parseConninfoUri(uri: string): Map<string, string> {
  const m = /^postgres(?:ql)?:\/\/([^/?#]*)(?:\/([^?#]*))?(?:\?([^#]*))?$/.exec(uri);
  if (!m) throw configError('--dbname: not a valid postgresql:// URI');
  const out = new Map<string, string>();
  let authority = m[1]!;
  const at = authority.lastIndexOf('@');
  if (at >= 0) {
    const userinfo = authority.slice(0, at);
    authority = authority.slice(at + 1);
    const colon = userinfo.indexOf(':');
    const user = colon >= 0 ? userinfo.slice(0, colon) : userinfo;
    if (user) out.set('user', decode(user, 'user name'));
    if (colon >= 0) out.set('password', decode(userinfo.slice(colon + 1), 'password'));
  }
  if (authority.includes(',')) throw configError('--dbname: a URI with several hosts is not supported; name one host');
  const hp = /^(\[[^\]]*\]|[^:]*)(?::(\d*))?$/.exec(authority);
  if (!hp) throw configError('--dbname: cannot read the host and port of the URI');
  const host = hp[1]!.replace(/^\[(.*)\]$/, '$1');
  if (host) out.set('host', decode(host, 'host'));
  if (hp[2]) out.set('port', hp[2]);
  if (m[2]) out.set('dbname', decode(m[2], 'database name'));
  for (const pair of (m[3] ?? '').split('&')) {
    if (!pair) continue;
    const eq = pair.indexOf('=');
    if (eq <= 0) throw configError('--dbname: a URI query parameter has no "="');
    out.set(decode(pair.slice(0, eq), 'query'), decode(pair.slice(eq + 1).replace(/\+/g, ' '), 'query'));
  }
  return out;
}

/** libpq's rule for a dbname value: a URI or a string containing '=' is a connection string. */
export function parseDbnameArgument(dbname: string | undefined): Map<string, string> {
  if (dbname === undefined || dbname === '') return new Map();
  if (/^postgres(ql)?:\/\//.test(dbname)) return parseConninfoUri(dbname);
  if (dbname.includes('=')) return parseKeyValueConninfo(dbname);
  return new Map([['dbname', dbname]]);
}

const ENV: Record<string, string> = {
  host: 'PGHOST', port: 'PGPORT', user: 'PGUSER', dbname: 'PGDATABASE', password: 'PGPASSWORD',
  passfile: 'PGPASSFILE', sslmode: 'PGSSLMODE', sslrootcert: 'PGSSLROOTCERT', sslcert: 'PGSSLCERT',
  sslkey: 'PGSSLKEY', application_name: 'PGAPPNAME', connect_timeout: 'PGCONNECT_TIMEOUT', options: 'PGOPTIONS',
};

/** Where a libpq built for Debian and one built from source put the socket; else TCP to localhost. */
function defaultHost(port: number, exists: (p: string) => boolean): string {
  for (const dir of ['/var/run/postgresql', '/tmp']) if (exists(`${dir}/.s.PGSQL.${port}`)) return dir;
  return 'localhost';
}

export function resolveConnParams(
  dbname: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
  exists: (p: string) => boolean = existsSync,
): ConnParams {
  const given = parseDbnameArgument(dbname);
  for (const key of given.keys()) {
    if (LIBPQ_ONLY.has(key)) throw configError(`--dbname: the connection option "${key}" is not supported by walvault backup-push`);
    if (!SUPPORTED.has(key)) throw configError(`--dbname: invalid connection option "${key.slice(0, 40)}"`);
  }
  const get = (key: string): string | undefined => {
    const v = given.get(key);
    if (v !== undefined && v !== '') return v;
    const e = ENV[key] ? env[ENV[key]!] : undefined;
    return e !== undefined && e !== '' ? e : undefined;
  };
  const portText = get('port') ?? '5432';
  const port = Number(portText);
  if (!/^\d+$/.test(portText) || port < 1 || port > 65535) throw configError(`invalid PostgreSQL port ${JSON.stringify(portText.slice(0, 20))}`);
  const host = get('host') ?? defaultHost(port, exists);
  if (host.includes(',')) throw configError('several PostgreSQL hosts are not supported; name one host');
  const sslmode = (get('sslmode') ?? 'prefer') as ConnParams['sslmode'];
  if (!SSLMODES.includes(sslmode)) throw configError(`invalid sslmode ${JSON.stringify(String(sslmode).slice(0, 20))} (one of ${SSLMODES.join(', ')})`);
  const timeoutText = get('connect_timeout') ?? String(CONNECT_TIMEOUT_S);
  if (!/^-?\d+$/.test(timeoutText.trim())) throw configError(`invalid connect_timeout ${JSON.stringify(timeoutText.slice(0, 20))}`);
  const t = Number(timeoutText.trim());
  // libpq: zero or negative waits forever; 1 is raised to 2 seconds.
  const connectTimeout = t <= 0 ? 0 : Math.max(t, 2);
  const tsa = given.get('target_session_attrs');
  if (tsa && tsa !== 'any' && tsa !== 'read-write' && tsa !== 'primary') throw configError(`--dbname: target_session_attrs=${tsa.slice(0, 20)} is not supported`);
  const user = get('user') ?? osUser();
  const p: ConnParams = { host, port, user, database: get('dbname') ?? user, sslmode, connectTimeout };
  const opt = (key: string, field: keyof ConnParams) => {
    const v = get(key);
    if (v !== undefined) (p as unknown as Record<string, unknown>)[field] = v;
  };
  opt('password', 'password');
  opt('passfile', 'passfile');
  opt('sslrootcert', 'sslrootcert');
  opt('sslcert', 'sslcert');
  opt('sslkey', 'sslkey');
  opt('application_name', 'applicationName');
  opt('fallback_application_name', 'fallbackApplicationName');
  opt('options', 'options');
  return p;
}

function osUser(): string {
  try {
    return userInfo().username;
  } catch {
    throw configError('cannot tell which PostgreSQL user to connect as: set PGUSER or user= in --dbname');
  }
}

/** "host:port" or the socket path, for messages (never the password). */
export function describeTarget(p: ConnParams): string {
  const where = p.host.startsWith('/') ? `${p.host}/.s.PGSQL.${p.port}` : `${p.host.includes(':') ? `[${p.host}]` : p.host}:${p.port}`;
  return `${where} (user ${p.user}, database ${p.database})`;
}
