import { describe, expect, it } from 'vitest';
import { parseConninfoUri, parseDbnameArgument, parseKeyValueConninfo, resolveConnParams } from '../../src/backup/pg-conninfo.js';
import { backupSql } from '../../src/backup/pg-session.js';

const none = () => false;

describe('key=value conninfo (libpq grammar)', () => {
  it('reads bare and quoted values with \\\' and \\\\ escapes and spaces around =', () => {
    const m = parseKeyValueConninfo(`host=db1 port = 5433 password='it\\'s a \\\\ secret' dbname='my db' application_name=a\\ b`);
    expect(Object.fromEntries(m)).toEqual({ host: 'db1', port: '5433', password: "it's a \\ secret", dbname: 'my db', application_name: 'a b' });
  });
  it('rejects a missing "=" and an unterminated quote without echoing the text', () => {
    expect(() => parseKeyValueConninfo('host=x hunter2')).toThrow(/missing "=" after "hunter2"/);
    let err: unknown;
    try {
      parseKeyValueConninfo("password='hunter2");
    } catch (e) {
      err = e;
    }
    expect((err as Error).name).toBe('ConfigError');
    expect((err as Error).message).not.toContain('hunter2');
  });
});

describe('postgresql:// URIs', () => {
  it('reads user, password, host, port, dbname and query parameters (percent-decoded)', () => {
    const m = parseConninfoUri('postgresql://al%40ice:p%3Ass@db.example:6432/my%20db?sslmode=require&application_name=x');
    expect(Object.fromEntries(m)).toEqual({ user: 'al@ice', password: 'p:ss', host: 'db.example', port: '6432', dbname: 'my db', sslmode: 'require', application_name: 'x' });
  });
  it('takes an IPv6 host in brackets and a socket directory percent-encoded or as ?host=', () => {
    expect(parseConninfoUri('postgres://[::1]:5433/db').get('host')).toBe('::1');
    expect(parseConninfoUri('postgres://%2Fvar%2Frun%2Fpostgresql/db').get('host')).toBe('/var/run/postgresql');
    expect(parseConninfoUri('postgres:///db?host=/tmp').get('host')).toBe('/tmp');
  });
  it('refuses several hosts and a non-URI', () => {
    expect(() => parseConninfoUri('postgres://a,b/db')).toThrow(/several hosts/);
    expect(() => parseConninfoUri('postgres://a/b#frag')).toThrow(/not a valid/);
  });
  it('a bare word is a database name; "=" makes it conninfo', () => {
    expect(Object.fromEntries(parseDbnameArgument('sales'))).toEqual({ dbname: 'sales' });
    expect(Object.fromEntries(parseDbnameArgument('dbname=sales host=h'))).toEqual({ dbname: 'sales', host: 'h' });
  });
});

describe('resolveConnParams: --dbname over PG* over defaults', () => {
  const env = { PGHOST: '/run/pg', PGPORT: '5440', PGUSER: 'envuser', PGDATABASE: 'envdb', PGPASSWORD: 'envpw', PGCONNECT_TIMEOUT: '7', PGAPPNAME: 'app' };
  it('uses the environment for every key the string leaves out', () => {
    expect(resolveConnParams('user=u1', env, none)).toMatchObject({ host: '/run/pg', port: 5440, user: 'u1', database: 'envdb', password: 'envpw', connectTimeout: 7, applicationName: 'app' });
  });
  it('database defaults to the user, the timeout to 30 s, sslmode to prefer', () => {
    const p = resolveConnParams('host=h user=bob', {}, none);
    expect(p).toMatchObject({ host: 'h', port: 5432, user: 'bob', database: 'bob', connectTimeout: 30, sslmode: 'prefer' });
    expect(p.password).toBeUndefined();
  });
  it('libpq timeout rules: 0 waits forever, 1 becomes 2', () => {
    expect(resolveConnParams('connect_timeout=0', {}, none).connectTimeout).toBe(0);
    expect(resolveConnParams('connect_timeout=1', {}, none).connectTimeout).toBe(2);
  });
  it('without a host: the Debian socket directory when its socket exists, else localhost', () => {
    expect(resolveConnParams(undefined, { PGUSER: 'u' }, (p) => p === '/var/run/postgresql/.s.PGSQL.5432').host).toBe('/var/run/postgresql');
    expect(resolveConnParams(undefined, { PGUSER: 'u' }, none).host).toBe('localhost');
  });
  it('refuses unknown and unsupported options, bad ports and sslmodes as config errors', () => {
    expect(() => resolveConnParams('hots=x', {}, none)).toThrow(/invalid connection option "hots"/);
    expect(() => resolveConnParams('service=x', {}, none)).toThrow(/"service" is not supported/);
    expect(() => resolveConnParams('port=99999', {}, none)).toThrow(/invalid PostgreSQL port/);
    expect(() => resolveConnParams('sslmode=sometimes', {}, none)).toThrow(/invalid sslmode/);
    try {
      resolveConnParams('port=x', {}, none);
    } catch (e) {
      expect((e as Error).name).toBe('ConfigError');
    }
  });
});

describe('backupSql: the functions by server version', () => {
  it('15+ uses pg_backup_start / pg_backup_stop(false)', () => {
    for (const v of [15, 16, 17]) {
      expect(backupSql(v).start).toMatch(/pg_backup_start\(\$1, \$2\)/);
      expect(backupSql(v).stop).toMatch(/pg_backup_stop\(false\)/);
    }
  });
  it('10-14 use the non-exclusive pg_start_backup(label, fast, false) / pg_stop_backup(false, false)', () => {
    for (const v of [10, 12, 14]) {
      expect(backupSql(v).start).toMatch(/pg_start_backup\(\$1, \$2, false\)/);
      expect(backupSql(v).stop).toMatch(/pg_stop_backup\(false, false\)/);
    }
  });
});
