import { readlinkSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, open, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { BackupInfo } from '../../src/backup/backup-info.js';
import { listBackups, sentinelBody } from '../../src/backup/catalog.js';
import { createExtractor } from '../../src/backup/extract.js';
import { findPgProgram } from '../../src/backup/pgbin.js';
import { buildRestoreCommand, recoverySettings, writeRecoverySettings } from '../../src/backup/recovery-conf.js';
import { loadConfig } from '../../src/common/config.js';
import { isWalvaultError } from '../../src/common/errors.js';
import { Deadline } from '../../src/common/retry.js';
import type { Storage } from '../../src/storage/types.js';

// Issue 8 items 5, 7 and 12: what backup-fetch and backup-list read from the repository is data,
// nothing it writes into postgresql.auto.conf can start a new line, and the restored tree is fsynced.

const dirs: string[] = [];
async function scratch(prefix = 'wv-trust-'): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), prefix));
  dirs.push(d);
  return d;
}
afterEach(async () => {
  vi.restoreAllMocks();
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

const ID = 'base_000000010000000000000007_20261124T061237Z';
/** backup.json as backup-push writes it. */
function validInfo(): BackupInfo {
  return {
    format: 1,
    id: ID,
    label: 'walvault base backup',
    startTime: '2026-11-24T06:12:37.123Z',
    stopTime: '2026-11-24T06:12:40.000Z',
    startLsn: '0/7000028',
    stopLsn: '0/7000138',
    checkpointLsn: '0/7000060',
    timeline: 1,
    stopTimeline: 1,
    startSegment: '000000010000000000000007',
    stopSegment: '000000010000000000000007',
    walSegmentSize: 16 * 1024 * 1024,
    sizeBytes: 23_000_000,
    sha256: 'a'.repeat(64),
    storedBytes: 3_000_000,
    codec: 'zstd',
    fileCount: 970,
    filesBytes: 22_000_000,
    manifestSha256: 'b'.repeat(64),
    pgVersion: 15,
    systemIdentifier: '7441234567890123456',
    startNextXid: '742',
    backupFrom: 'primary',
    serverStartTime: '2026-11-24 06:12:37 UTC',
    serverStopTime: '2026-11-24 06:12:39 UTC',
    walvaultVersion: '0.1.0',
  };
}

const MISSING = Symbol('missing');
const MUTATIONS: unknown[] = [
  MISSING, null, true, 0, -1, 1.5, 2 ** 53, 1e300, '', '1', '../../tmp/x', '/usr/bin/id', 'a\nb', '\u0000', '\u001b[31m', 'x'.repeat(2000), [], {}, [15], { v: 15 },
];
const TEXT = new Set(['label', 'serverStartTime', 'serverStopTime', 'walvaultVersion']);
const OPTIONAL = new Set(['startNextXid', 'serverStopTime']);

/** The few mutations that are still a valid backup.json. */
function stillValid(field: string, v: unknown): boolean {
  if (v === MISSING) return OPTIONAL.has(field);
  if (TEXT.has(field)) return typeof v === 'string' && v.length <= 1024 && !/[\u0000-\u001f]/.test(v);
  if (field === 'manifestSha256') return v === '';
  if (['sizeBytes', 'storedBytes', 'fileCount', 'filesBytes', 'pgVersion'].includes(field)) return v === 0;
  if (field === 'startNextXid' || field === 'systemIdentifier') return v === '1';
  return false;
}

describe('backup.json from the repository', () => {
  it('trust: every field of backup.json is validated', async () => {
    // The repository as listBackups sees it: one backup.json, replaced between attempts.
    const objects = new Map<string, { body: Buffer; meta: Record<string, string> }>();
    const storage = {
      url: 'file:///repo',
      put: async (key: string, body: Buffer, meta: Record<string, string>) => void objects.set(key, { body, meta }),
      list: async function* (prefix: string) {
        for (const key of objects.keys()) if (key.startsWith(prefix)) yield { key };
      },
      get: async (key: string) => {
        const o = objects.get(key);
        return o ? { body: Readable.from([o.body]), info: { key, meta: o.meta } } : null;
      },
    } as unknown as Storage;
    const policy = { retries: 0, minDelayMs: 1, maxDelayMs: 1, attemptTimeoutMs: 5000 } as never;
    const put = async (info: Record<string, unknown>) => {
      const { body, meta } = sentinelBody(info as unknown as BackupInfo);
      await storage.put(`backups/${ID}/backup.json`, body, meta);
    };
    const list = async () => {
      const rejected = new Map<string, Error>();
      const deadline = new Deadline(10_000);
      try {
        return { found: await listBackups(storage, policy, deadline, rejected), rejected };
      } finally {
        deadline.dispose();
      }
    };
    vi.spyOn(process.stderr, 'write').mockImplementation(() => true);

    await put(validInfo() as unknown as Record<string, unknown>);
    expect((await list()).found.map((b) => b.id)).toEqual([ID]);

    const accepted: string[] = [];
    const wrongError: string[] = [];
    for (const field of Object.keys(validInfo())) {
      for (const v of MUTATIONS) {
        const info = validInfo() as unknown as Record<string, unknown>;
        if (v === MISSING) delete info[field];
        else info[field] = v;
        await put(info);
        const { found, rejected } = await list();
        const shown = `${field}=${v === MISSING ? '<missing>' : JSON.stringify(v)}`;
        if (stillValid(field, v)) {
          if (found.length !== 1) wrongError.push(`${shown} was refused`);
          continue;
        }
        if (found.length > 0) accepted.push(shown);
        const e = rejected.get(ID);
        if (!isWalvaultError(e) || e.code !== 'BackupError' || !e.message.includes(`backups/${ID}/backup.json`) || !e.message.includes(`"${field}"`)) {
          wrongError.push(`${shown}: ${e ? `${(e as Error).name}: ${e.message}` : 'no error'}`);
        }
      }
    }
    expect(accepted, 'hostile values accepted').toEqual([]);
    expect(wrongError, 'refused without a BackupError naming the object and field').toEqual([]);

    // Not JSON, not an object, and an id that differs from its directory.
    for (const body of ['{', '[]', JSON.stringify({ ...validInfo(), id: 'base_000000010000000000000008_20261124T061237Z' })]) {
      await storage.put(`backups/${ID}/backup.json`, Buffer.from(body), { codec: 'none' });
      const { found, rejected } = await list();
      expect(found).toEqual([]);
      expect(rejected.get(ID)?.message).toContain(`backups/${ID}/backup.json`);
    }
  });

  it('trust: pg_verifybackup never comes from a path built from pgVersion', async () => {
    const evil = await scratch();
    await mkdir(join(evil, 'bin'));
    await writeFile(join(evil, 'bin', 'pg_verifybackup'), '#!/bin/sh\nexit 0\n');
    await chmod(join(evil, 'bin', 'pg_verifybackup'), 0o755);
    const version = relative('/usr/lib/postgresql', evil);
    vi.stubEnv('PATH', '/nonexistent');
    try {
      for (const v of [version, `15/../${version}`, 1.5, -15] as unknown as number[]) {
        const found = findPgProgram('pg_verifybackup', undefined, v);
        expect(found === undefined || /^\/usr\/lib\/postgresql\/\d+\/bin\/pg_verifybackup$/.test(found), String(found)).toBe(true);
      }
    } finally {
      vi.unstubAllEnvs();
    }
  });
});

describe('postgresql.auto.conf', () => {
  const code = (f: () => unknown): string => {
    try {
      f();
      return 'no error';
    } catch (e) {
      return isWalvaultError(e) ? `${e.code} ${e.exitCode}` : String(e);
    }
  };

  it('trust: no control character reaches postgresql.auto.conf', async () => {
    const name = (n: string) => ({ kind: 'name' as const, name: n });
    for (const bad of ['a\nrestore_command = \'id\'', 'a\rb', 'a\u0000', 'a\u2028b', 'a\u0085b']) {
      expect(code(() => recoverySettings(name(bad), {}, undefined, 'X')), JSON.stringify(bad)).toBe('UsageError 2');
      expect(code(() => recoverySettings(name('ok'), {}, undefined, `X ${bad}`)), JSON.stringify(bad)).toBe('UsageError 2');
    }
    // Settings carried into restore_command: from a flag -> 2, from the environment -> 4.
    const flag = loadConfig({ repo: 's3://bucket/pg', 's3-endpoint': 'http://127.0.0.1:7480\nrecovery_target = immediate' }, {});
    expect(code(() => buildRestoreCommand(flag, '/usr/bin/node', '/opt/walvault.mjs'))).toBe('UsageError 2');
    const env = loadConfig({ repo: 's3://bucket/pg' }, { WALVAULT_S3_REGION: 'eu\nwest-1' });
    expect(code(() => buildRestoreCommand(env, '/usr/bin/node', '/opt/walvault.mjs'))).toBe('ConfigError 4');
    expect(code(() => buildRestoreCommand(loadConfig({ repo: 's3://bucket/pg' }, {}), '/usr/bin/node', '/opt/wal\nvault.mjs'))).toBe('ConfigError 4');

    // End to end through the writer: refused, and the file is untouched.
    const pgdata = await scratch();
    await writeFile(join(pgdata, 'postgresql.auto.conf'), '# original\n');
    await expect(
      writeRecoverySettings(pgdata, validInfo(), name('x\nrecovery_target_action = promote'), {}, undefined, 'X', undefined),
    ).rejects.toMatchObject({ code: 'UsageError' });
    expect(await readFile(join(pgdata, 'postgresql.auto.conf'), 'utf8')).toBe('# original\n');
    expect(await readdir(pgdata)).toEqual(['postgresql.auto.conf']);
  });

  it('trust: endpoint user-info never reaches restore_command', () => {
    vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    const loaded = loadConfig({ repo: 's3://bucket/pg' }, { AWS_ENDPOINT_URL_S3: 'http://AKIA:sekrit@127.0.0.1:7480/' });
    const cmd = buildRestoreCommand(loaded, '/usr/bin/node', '/opt/walvault.mjs');
    expect(cmd).not.toContain('sekrit');
    expect(cmd).not.toContain('AKIA');
    expect(cmd).toContain('--s3-endpoint=http://127.0.0.1:7480/');
  });
});

describe('restored tree durability', () => {
  it('trust: backup-fetch makes the restored tree durable', async () => {
    const pack = tar.pack();
    const names = ['PG_VERSION', 'base/1/1259', 'base/1/1249', 'global/pg_control', 'pg_wal/archive_status/', 'pg_xact/0000', 'backup_manifest'];
    for (const n of names) {
      if (n.endsWith('/')) pack.entry({ name: n, type: 'directory', mode: 0o700 });
      else pack.entry({ name: n, mode: 0o600 }, `content of ${n}`);
    }
    pack.finalize();
    const root = await scratch();
    // Every fsync, by the path of the descriptor it was called on.
    const probe = await open(join(root, '.probe'), 'w');
    const proto = Object.getPrototypeOf(probe) as { sync: () => Promise<void> };
    await probe.close();
    await rm(join(root, '.probe'));
    const original = proto.sync;
    const synced: string[] = [];
    vi.spyOn(proto, 'sync').mockImplementation(function (this: { fd: number }) {
      synced.push(readlinkSync(`/proc/self/fd/${this.fd}`));
      return original.call(this);
    });
    await pipeline(Readable.from(pack), createExtractor(root));
    const everything = [root];
    const walk = async (d: string) => {
      for (const e of await readdir(d, { withFileTypes: true })) {
        everything.push(join(d, e.name));
        if (e.isDirectory()) await walk(join(d, e.name));
      }
    };
    await walk(root);
    expect(everything.length).toBe(names.length + 6); // + root, base, base/1, global, pg_wal, pg_xact
    expect(everything.filter((p) => !synced.includes(p)), 'never fsynced').toEqual([]);
    // Each directory after its entries: the parent of a file is synced after the file.
    expect(synced.lastIndexOf(join(root, 'base', '1'))).toBeGreaterThan(synced.indexOf(join(root, 'base', '1', '1249')));
    expect(synced.lastIndexOf(root)).toBe(synced.length - 1);
  });
});
