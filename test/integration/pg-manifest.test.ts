import { createHash } from 'node:crypto';
import { chmod, copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { walkDataDirectory } from '../../src/backup/data-dir-walk.js';
import { buildBackupManifest, type ManifestFile } from '../../src/backup/pg-manifest.js';
import { chownToPostgres, PG_BIN_DIR, PgCluster, runAsPostgres } from '../support/pg.js';
import { cleanupAll, tempDir } from '../support/walvault.js';

// Issue 10 item 2: the backup_manifest of a file-level backup is PostgreSQL's own format, so
// pg_verifybackup (here -n: no WAL parsing) checks a restored format-2 backup like a streamed one.

describe('backup_manifest built by walvault, checked by PostgreSQL 15', () => {
  let pg: PgCluster;

  beforeAll(async () => {
    pg = await PgCluster.create({ walSegSizeMb: 1 });
    await pg.start();
    await pg.query("CREATE TABLE t AS SELECT g, md5(g::text) AS h FROM generate_series(1, 20000) g; CREATE UNLOGGED TABLE u AS SELECT g FROM generate_series(1, 1000) g; CHECKPOINT");
  });
  afterAll(async () => {
    await pg?.destroy();
    await cleanupAll();
  });

  it('is byte for byte the manifest pg_basebackup receives for the same files and WAL range', async () => {
    const dir = join(await tempDir('wv-pgbb', { forPostgres: true }), 'bb');
    const r = await runAsPostgres(join(PG_BIN_DIR, 'pg_basebackup'), ['-D', dir, '-Fp', '-X', 'none', '-c', 'fast', '--manifest-checksums=SHA256', '--no-sync'], { env: pg.connectionEnv() });
    expect(r.code, r.stderr).toBe(0);
    const theirs = await readFile(join(dir, 'backup_manifest'));
    const doc = JSON.parse(theirs.toString('utf8')) as { Files: Array<Record<string, string | number>>; 'WAL-Ranges': Array<Record<string, string | number>> };
    const files: ManifestFile[] = doc.Files.map((f) => ({
      path: f['Path'] as string,
      size: f['Size'] as number,
      mtimeMs: Date.parse(String(f['Last-Modified']).replace(' ', 'T').replace(' GMT', 'Z')),
      sha256: f['Checksum'] as string,
    }));
    expect(files.length).toBeGreaterThan(500);
    const w = doc['WAL-Ranges'][0]!;
    const ours = buildBackupManifest(files, { timeline: w['Timeline'] as number, startLsn: w['Start-LSN'] as string, endLsn: w['End-LSN'] as string });
    expect(ours.toString('utf8')).toBe(theirs.toString('utf8'));

    // And the walk of the running cluster picks the same files PostgreSQL's base backup did
    // (backup_label is made by pg_backup_stop, not found on disk).
    const walked = (await walkDataDirectory(pg.dataDir, { serverVersion: 15 })).filter((e) => e.type === 'file').map((e) => e.path);
    expect(walked.sort()).toEqual(files.map((f) => f.path).filter((p) => p !== 'backup_label').sort());
  });

  it('pg_verifybackup -n accepts a walked copy of a stopped cluster with it, and rejects the copy once a file changes', async () => {
    await pg.stop('fast');
    const entries = await walkDataDirectory(pg.dataDir, { serverVersion: 15 });
    const copy = join(await tempDir('wv-manifest', { forPostgres: true }), 'data');
    await mkdir(copy, { mode: 0o700 });
    const files: ManifestFile[] = [];
    for (const e of entries) {
      const to = join(copy, e.path);
      if (e.type === 'dir') {
        await mkdir(to, { mode: e.mode });
      } else if (e.type === 'file') {
        await copyFile(join(pg.dataDir, e.path), to);
        await chmod(to, e.mode);
        const sha256 = createHash('sha256').update(await readFile(to)).digest('hex');
        files.push({ path: e.path, size: e.size!, mtimeMs: e.mtimeMs!, sha256 });
      }
    }
    // An unlogged table keeps only its init fork; the manifest lists exactly what was copied.
    expect(files.some((f) => /^base\/\d+\/\d+_init$/.test(f.path))).toBe(true);
    await writeFile(join(copy, 'backup_manifest'), buildBackupManifest(files, { timeline: 1, startLsn: '0/2000028', endLsn: '0/2000100' }));
    await chownToPostgres(copy);
    const verify = () => runAsPostgres(join(PG_BIN_DIR, 'pg_verifybackup'), ['-n', copy]);
    const ok = await verify();
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/backup successfully verified/);

    // Same size, one byte different: only the checksum can tell.
    const victim = files.filter((f) => f.path.startsWith('base/') && f.size > 8192).at(-1)!;
    const bytes = await readFile(join(copy, victim.path));
    bytes[100] = bytes[100]! ^ 0xff;
    await writeFile(join(copy, victim.path), bytes);
    const bad = await verify();
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain(`checksum mismatch for file "${victim.path}"`);
  });
});
