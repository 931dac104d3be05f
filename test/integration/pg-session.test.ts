import { chmod, readFile, writeFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { realpathSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { walkDataDirectory } from '../../src/backup/data-dir-walk.js';
import { parseBackupLabel } from '../../src/backup/label.js';
import { openBackupSession, type BackupSession } from '../../src/backup/pg-session.js';
import type { Config } from '../../src/common/config.js';
import { parseLsn } from '../../src/wal/names.js';
import { freePort, PgCluster } from '../support/pg.js';
import { cleanupAll, tempDir } from '../support/walvault.js';

// Issue 10 item 2: backup-push's own SQL session (node-postgres) against a real PostgreSQL 15:
// connection like pg_basebackup (URI, key=value, PG* environment, password file), non-exclusive
// pg_backup_start/pg_backup_stop on one session, and failures that end in one line, quickly.

const config = {} as Config; // openBackupSession reads nothing from it yet
const PW = 'right-pw-Zq7';

async function failure(p: Promise<unknown>): Promise<{ err: Error & { code?: string }; ms: number }> {
  const t0 = Date.now();
  try {
    await p;
  } catch (e) {
    return { err: e as Error & { code?: string }, ms: Date.now() - t0 };
  }
  throw new Error('expected a failure');
}

describe('backup session against PostgreSQL 15', () => {
  let pg: PgCluster;
  let tcp: string;

  beforeAll(async () => {
    pg = await PgCluster.create({ walSegSizeMb: 1 });
    // A role that must give a password over TCP; everything else stays trust (initdb --auth=trust).
    const hba = join(pg.dataDir, 'pg_hba.conf');
    await writeFile(hba, `host all wv_pw 127.0.0.1/32 scram-sha-256\n${await readFile(hba, 'utf8')}`);
    await pg.start();
    await pg.query(`CREATE ROLE wv_pw LOGIN SUPERUSER PASSWORD '${PW}'`);
    tcp = `host=127.0.0.1 port=${pg.port} dbname=postgres`;
  });
  afterAll(async () => {
    await pg?.destroy();
    await cleanupAll();
  });

  it('URI, key=value and the PG* environment (socket directory) reach the server, named walvault backup-push', async () => {
    const sysid = await pg.query('SELECT system_identifier FROM pg_control_system()');
    const forms: Array<[string | undefined, NodeJS.ProcessEnv]> = [
      [`postgresql://postgres@127.0.0.1:${pg.port}/postgres`, {}],
      [`${tcp} user=postgres`, {}],
      [undefined, { PGHOST: pg.socketDir, PGPORT: String(pg.port), PGUSER: 'postgres', PGDATABASE: 'postgres' }],
    ];
    for (const [dbname, env] of forms) {
      const s = await openBackupSession(config, dbname, { env });
      try {
        expect(realpathSync(s.dataDirectory)).toBe(realpathSync(pg.dataDir));
        expect(s.systemIdentifier).toBe(sysid);
        expect(s.serverVersion).toBe(15);
        expect(s.inRecovery).toBe(false);
        expect(await pg.query("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'walvault backup-push'")).toBe('1');
      } finally {
        await s.close();
      }
    }
  });

  it('start, walk, stop: backup_label names the start LSN; a second session backs up at the same time', async () => {
    const env = {};
    const s1 = await openBackupSession(config, `${tcp} user=postgres`, { env });
    const s2 = await openBackupSession(config, `${tcp} user=postgres`, { env });
    try {
      const { startLsn } = await s1.start('wv-session-1', true);
      const second = await s2.start('wv-session-2', true);
      expect(await pg.query("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND application_name = 'walvault backup-push'")).toBe('2');
      const entries = await walkDataDirectory(s1.dataDirectory, { serverVersion: s1.serverVersion });
      const paths = entries.map((e) => e.path);
      expect(paths).toContain('PG_VERSION');
      expect(paths).toContain('base/1/PG_VERSION');
      expect(paths).not.toContain('postmaster.pid');
      expect(paths.filter((p) => p.startsWith('pg_wal/'))).toEqual(['pg_wal/archive_status']);
      expect(paths.at(-1)).toBe('global/pg_control');
      const r1 = await s1.stop();
      const label = parseBackupLabel(r1.backupLabel);
      expect(label.startLsn).toBe(startLsn);
      expect(label.label).toBe('wv-session-1');
      expect(label.backupFrom).toBe('primary');
      expect(r1.tablespaceMap).toBe('');
      expect(parseLsn(r1.stopLsn)).toBeGreaterThan(parseLsn(startLsn));
      const r2 = await s2.stop();
      expect(parseBackupLabel(r2.backupLabel)).toMatchObject({ startLsn: second.startLsn, label: 'wv-session-2' });
    } finally {
      await s1.close();
      await s2.close();
    }
  });

  it('when the session ends during the backup, stop() says the backup is lost', async () => {
    const s = await openBackupSession(config, `${tcp} user=postgres`, { env: {} });
    try {
      await s.start('wv-session-lost', true);
      await pg.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'walvault backup-push'");
      const { err } = await failure(s.stop());
      expect(err.name).toBe('BackupError');
      expect(err.message).toMatch(/PostgreSQL session to 127\.0\.0\.1:\d+ .* ended .*cannot complete/);
    } finally {
      await s.close();
    }
  });

  it('a wrong password is one clear line within seconds, without the password; PGPASSWORD and a password file work', async () => {
    const { err, ms } = await failure(openBackupSession(config, `${tcp} user=wv_pw password=wrong-pw-123`, { env: {} }));
    expect(err.name).toBe('BackupError');
    expect(err.message).toMatch(/^cannot connect to PostgreSQL at 127\.0\.0\.1:\d+ \(user wv_pw, database postgres\): password authentication failed for user "wv_pw"$/);
    expect(err.message).not.toContain('wrong-pw-123');
    expect(ms).toBeLessThan(5000);

    const none = await failure(openBackupSession(config, `${tcp} user=wv_pw`, { env: { HOME: '/nonexistent' } }));
    expect(none.err.message).toMatch(/asked for a password and none was given/);

    const s1 = await openBackupSession(config, `${tcp} user=wv_pw`, { env: { PGPASSWORD: PW } });
    await s1.close();
    const dir = await tempDir('wv-pgpass');
    const passfile = join(dir, 'pgpass');
    await writeFile(passfile, `# comment\nother:1:*:*:nope\n127.0.0.1:${pg.port}:*:wv_pw:${PW}\n`);
    await chmod(passfile, 0o600);
    const s2 = await openBackupSession(config, `${tcp} user=wv_pw passfile=${passfile}`, { env: {} });
    await s2.close();
    const home = await tempDir('wv-pghome');
    await writeFile(join(home, '.pgpass'), `127.0.0.1:${pg.port}:postgres:wv_pw:${PW}\n`, { mode: 0o600 });
    const s3 = await openBackupSession(config, `postgres://wv_pw@127.0.0.1:${pg.port}/postgres`, { env: { HOME: home } });
    await s3.close();
  });

  it('a refused port and a silent server fail quickly with one line (connect_timeout)', async () => {
    const refused = await failure(openBackupSession(config, `host=127.0.0.1 port=${await freePort()} user=postgres`, { env: {} }));
    expect(refused.err.name).toBe('BackupError');
    expect(refused.err.message).toMatch(/^cannot connect to PostgreSQL at 127\.0\.0\.1:\d+ .*: connection refused/);
    expect(refused.ms).toBeLessThan(3000);

    const sockets: Socket[] = [];
    const silent: Server = createServer((s) => sockets.push(s)); // accepts, never answers
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const port = (silent.address() as { port: number }).port;
    try {
      const hung = await failure(openBackupSession(config, `host=127.0.0.1 port=${port} user=postgres sslmode=disable`, { env: { PGCONNECT_TIMEOUT: '2' } }));
      expect(hung.err.message).toMatch(/^cannot connect to PostgreSQL at 127\.0\.0\.1:\d+ .*: no answer within 2 s/);
      expect(hung.err.message).not.toMatch(/\n/);
      expect(hung.ms).toBeGreaterThanOrEqual(1900);
      expect(hung.ms).toBeLessThan(6000);
    } finally {
      for (const s of sockets) s.destroy();
      silent.close();
    }
  });

  it('an AbortSignal cancels a pg_backup_start that waits for a spread checkpoint', async () => {
    // Dirty buffers and a checkpoint spread over most of an hour: pg_backup_start(fast => false) waits.
    await pg.query("ALTER SYSTEM SET checkpoint_timeout = '1h'");
    await pg.query('ALTER SYSTEM SET checkpoint_completion_target = 0.9');
    await pg.reload();
    await pg.query("CREATE TABLE dirty AS SELECT g, repeat('x', 400) AS pad FROM generate_series(1, 50000) g");
    let s: BackupSession | undefined;
    try {
      s = await openBackupSession(config, `${tcp} user=postgres`, { env: {} });
      const ac = new AbortController();
      const t = setTimeout(() => ac.abort(new Error('test abort')), 1500);
      const { err, ms } = await failure(s.start('wv-cancel', false, ac.signal));
      clearTimeout(t);
      expect(err.message).toBe('test abort');
      expect(ms).toBeLessThan(4000);
      // The server got the cancel: the call no longer runs, and the session is not in a backup.
      await pg.waitFor("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%pg_backup_start%' AND application_name = 'walvault backup-push'", (o) => o === '0', 10_000);
    } finally {
      await s?.close();
    }
  });
});
