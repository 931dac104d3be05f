// Client-side encryption end to end on PostgreSQL 15 and radosgw: a cluster archives through an
// encrypted repository (compression off, so plaintext would show), a full and an incremental backup
// (the key rotated between them), PITR to a point between two batches, a history file; no stored
// byte holds the marker written into the database; every object carries the cipher and key id; a
// flipped byte, a truncation, two swapped frames and an object copied under another name are
// refused; a missing or wrong key is an error naming the key id, never "not found".
import { randomBytes } from 'node:crypto';
import { chown, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FRAME_LOG2, HEADER_BYTES, TAG_BYTES } from '../../src/crypto/frames.js';
import { chownToPostgres, PgCluster, startRestoredCluster } from '../support/pg.js';
import { envFor, getRaw, headRaw, listKeys, putRaw, testStores, type TestStore } from '../support/stores.js';
import { cleanupAll, runWalvault, tempDir, type WalvaultResult } from '../support/walvault.js';
import { startArchivingCluster, switchAndWaitArchived } from '../support/archiving-cluster.js';
import { writeFakeSegment } from '../support/wal-fixtures.js';

const rgw = testStores().filter((s) => s.name === 'rgw');
const hex = () => randomBytes(32).toString('hex');
const FRAME = 2 ** FRAME_LOG2;

/** A keyring file owned by `owner` (mode 0600): walvault refuses one another user could read. */
async function writeKeyring(path: string, lines: string[], owner: 'root' | 'postgres'): Promise<void> {
  await writeFile(path, `# walvault test keyring\n${lines.join('\n')}\n`, { mode: 0o600 });
  if (owner === 'postgres') await chownToPostgres(path);
  else await chown(path, 0, 0);
}

describe.each(rgw)('encryption on $name', (store: TestStore) => {
  let pg: PgCluster;
  let bucket: string;
  let env: Record<string, string>;
  const restored: PgCluster[] = [];
  const marker = `walvault-marker-${randomBytes(8).toString('hex')}`;
  const k1 = `k1 ${hex()}`;
  const k2 = `k2 ${hex()}`;
  let pgKeys: string;
  let keyDir: string;
  let full = '';
  let inc = '';
  let t2 = '';
  let segment = '';

  const show = (r: WalvaultResult) => `exit ${r.code}\n${r.stderr}${r.stdout}`;
  const wv = (args: string[], extra: Record<string, string> = {}) => runWalvault(args, { env: { ...env, ...extra }, timeoutMs: 240_000 });
  /** The repository without the config file (which names postgres's keyring) and without a key. */
  const keyless = () => ({ ...envFor(store, bucket, 'pg'), WALVAULT_CONFIG: '', WALVAULT_ENCRYPTION_KEY_FILE: '' });
  const segKey = (name: string) => `pg/wal/${name.slice(0, 16)}/${name}`;
  const rows = (c: PgCluster) => c.query('SELECT batch, count(*) FROM items GROUP BY batch ORDER BY batch');

  beforeAll(async () => {
    keyDir = await tempDir('wv-keys', { forPostgres: true });
    pgKeys = join(keyDir, 'postgres.keys');
    await writeKeyring(pgKeys, [k1], 'postgres');
    // One keyring, postgres's, named in the config file: archive_command and restore_command read it
    // as postgres, the test's own commands as root (root may use the keyring of the user it serves).
    ({ pg, bucket, env } = await startArchivingCluster(store, 'enc', { settings: { encryptionKeyFile: pgKeys, compression: 'none' } }));
    await pg.query('CREATE TABLE items (batch int, n int, note text)');
    await pg.query(`INSERT INTO items SELECT 1, g, '${marker}' FROM generate_series(1, 200) g`);
    await switchAndWaitArchived(pg);
  });

  afterAll(async () => {
    for (const c of restored) await c.destroy();
    await pg?.destroy();
    await cleanupAll();
  });

  it('encryption: a full backup under k1, the key rotated (k2 on top), an incremental under k2', async () => {
    const r = await wv(['backup-push', '--method', 'files', '--jobs', '2', '--backup-bundle-size', '1MiB'], pg.connectionEnv());
    expect(r.code, show(r)).toBe(0);
    full = r.stdout.trim();
    await pg.query(`INSERT INTO items SELECT 2, g, '${marker}' FROM generate_series(1, 200) g`);
    await switchAndWaitArchived(pg);
    // Rotation is a line on top: k2 seals what is written from now on, k1 still opens the rest.
    await writeKeyring(pgKeys, [k2, k1], 'postgres');
    const i = await wv(['backup-push', '--method', 'files', '--incremental', '--jobs', '2', '--backup-bundle-size', '1MiB'], pg.connectionEnv());
    expect(i.code, show(i)).toBe(0);
    inc = i.stdout.trim();
    await pg.query(`INSERT INTO items SELECT 3, g, '${marker}' FROM generate_series(1, 200) g`);
    await pg.query('SELECT pg_sleep(0.5)');
    t2 = await pg.query('SELECT now()');
    await pg.query('SELECT pg_sleep(0.5)');
    await pg.query(`INSERT INTO items SELECT 4, g, '${marker}' FROM generate_series(1, 200) g`);
    segment = await pg.query('SELECT pg_walfile_name(pg_current_wal_insert_lsn())');
    await switchAndWaitArchived(pg);

    const meta = async (key: string) => (await headRaw(store, bucket, key))!.metadata;
    expect(await meta(`pg/backups/${full}/files.json`)).toMatchObject({ 'walvault-cipher': 'aes-256-gcm-v1', 'walvault-key-id': 'k1' });
    expect(await meta(`pg/backups/${inc}/files.json`)).toMatchObject({ 'walvault-cipher': 'aes-256-gcm-v1', 'walvault-key-id': 'k2' });
    expect(await meta(segKey(segment))).toMatchObject({ 'walvault-key-id': 'k2' });
    const manifest = await getRaw(store, bucket, 'pg/walvault.json');
    expect(manifest!.metadata['walvault-key-id']).toBe('k1');
  });

  it('encryption: no stored byte holds the marker, every object is sealed, and opened the marker is there', async () => {
    const keys = await listKeys(store, bucket, 'pg/');
    expect(keys.length).toBeGreaterThan(20);
    const needle = Buffer.from(marker);
    for (const key of keys) {
      const o = (await getRaw(store, bucket, key))!;
      expect(o.body.includes(needle), key).toBe(false);
      expect(o.metadata['walvault-cipher'], key).toBe('aes-256-gcm-v1');
      // The hash of the original bytes would let the store confirm a guess of a small object: sealed too.
      expect(o.metadata['walvault-sha256'], key).toBeUndefined();
      expect(o.metadata['walvault-sha256-sealed'], key).toMatch(/^[A-Za-z0-9+/]+=*$/);
      expect(o.body.subarray(0, 4).toString('latin1'), key).toBe('WVX1');
    }
    // The control: the same segment opened through walvault holds the marker (compression is off),
    // so the scan above would have found it had walvault stored it in the clear.
    const out = join(await tempDir('wv-enc-fetch'), segment);
    const f = await wv(['wal-fetch', segment, out]);
    expect(f.code, show(f)).toBe(0);
    expect((await readFile(out)).includes(needle)).toBe(true);
  });

  it('encryption: PITR from the k1 full and the k2 incremental to a point between batch 3 and 4; a history file round trip', async () => {
    const dir = join(await tempDir('wv-enc-restore', { forPostgres: true }), 'data');
    const r = await runWalvault(['backup-fetch', 'LATEST', dir, '--owner', 'postgres', '--jobs', '2', '--target-time', t2, '--target-action', 'promote'], {
      env,
      wrapper: true,
      timeoutMs: 240_000,
    });
    expect(r.code, show(r)).toBe(0);
    expect(r.stderr).toContain(inc);
    const c = await startRestoredCluster(dir, restored);
    expect(await rows(c)).toBe('1|200\n2|200\n3|200');
    // The promoted cluster's history file, archived and fetched back.
    const history = (await readdir(join(dir, 'pg_wal'))).find((n) => n.endsWith('.history'));
    expect(history).toBeDefined();
    const p = await wv(['wal-push', join(dir, 'pg_wal', history!), history!]);
    expect(p.code, show(p)).toBe(0);
    expect((await headRaw(store, bucket, `pg/wal/${history}`))!.metadata['walvault-key-id']).toBe('k2');
    const out = join(await tempDir('wv-enc-hist'), history!);
    const f = await wv(['wal-fetch', history!, out]);
    expect(f.code, show(f)).toBe(0);
    expect((await readFile(out)).equals(await readFile(join(dir, 'pg_wal', history!)))).toBe(true);
  });

  it('encryption: a missing or wrong key is an error naming the key id (wal-fetch stops recovery), never "not found"', async () => {
    const out = join(await tempDir('wv-enc-nokey'), segment);
    const none = await wv(['wal-fetch', segment, out], keyless());
    expect(none.code, show(none)).toBeGreaterThan(125);
    expect(none.stderr).toMatch(/is encrypted \(key id k2\); configure encryptionKeyFile or encryptionKeyCommand/);
    const other = join(keyDir, 'other.keys');
    await writeKeyring(other, [`k9 ${hex()}`], 'root');
    const wrong = await wv(['wal-fetch', segment, out], { WALVAULT_ENCRYPTION_KEY_FILE: other });
    expect(wrong.code, show(wrong)).toBeGreaterThan(125);
    expect(wrong.stderr).toMatch(/key k2, which is not in the keyring/);
    const list = await wv(['backup-list'], { WALVAULT_ENCRYPTION_KEY_FILE: other });
    expect(list.code, show(list)).toBe(4);
    expect(list.stderr).toMatch(/key k1, which is not in the keyring|key k2, which is not in the keyring/);
    // A key id that is there with other key material: the frames do not authenticate.
    const impostor = join(keyDir, 'impostor.keys');
    await writeKeyring(impostor, [`k2 ${hex()}`], 'root');
    const bad = await wv(['wal-fetch', segment, out], { WALVAULT_ENCRYPTION_KEY_FILE: impostor });
    expect(bad.code, show(bad)).toBeGreaterThan(125);
    expect(bad.stderr).toMatch(/does not authenticate|sealed SHA-256 does not open with key k2/);
  });

  it('encryption: a key-less wal-push into the encrypted repository is refused, nothing written', async () => {
    const { path: file } = await writeFakeSegment(await tempDir('wv-enc-push'), 0x99);
    const r = await wv(['wal-push', file, '000000010000000000000099'], keyless());
    expect(r.code, show(r)).toBe(4);
    expect(r.stderr).toMatch(/encrypt/);
    expect(await headRaw(store, bucket, segKey('000000010000000000000099'))).toBeNull();
  });

  it('encryption: a flipped byte, a truncation, two swapped frames and an object copied under another name are refused', async () => {
    const key = segKey(segment);
    const o = (await getRaw(store, bucket, key))!;
    const frames = Math.ceil((o.body.length - HEADER_BYTES) / (FRAME + TAG_BYTES));
    expect(frames).toBeGreaterThan(3);
    const frame = (i: number) => o.body.subarray(HEADER_BYTES + i * (FRAME + TAG_BYTES), HEADER_BYTES + (i + 1) * (FRAME + TAG_BYTES));
    const flipped = Buffer.from(o.body);
    flipped.writeUInt8(flipped.readUInt8(HEADER_BYTES + 5 * FRAME) ^ 0x01, HEADER_BYTES + 5 * FRAME);
    const cases: Array<[string, string, Buffer]> = [
      ['flipped byte', key, flipped],
      ['truncated at a frame boundary', key, o.body.subarray(0, HEADER_BYTES + 2 * (FRAME + TAG_BYTES))],
      ['swapped frames', key, Buffer.concat([o.body.subarray(0, HEADER_BYTES), frame(1), frame(0), o.body.subarray(HEADER_BYTES + 2 * (FRAME + TAG_BYTES))])],
    ];
    // Another segment's name: the per-object key is bound to the object's name.
    const other = segment.slice(0, 16) + 'FF'.padStart(8, '0');
    cases.push(['copied under another name', segKey(other), o.body]);
    try {
      for (const [what, target, body] of cases) {
        await putRaw(store, bucket, target, body, o.metadata);
        const name = target.slice(target.lastIndexOf('/') + 1);
        const out = join(await tempDir('wv-enc-tamper'), name);
        const r = await wv(['wal-fetch', name, out, '--retries', '1']);
        expect(r.code, `${what}: ${show(r)}`).toBeGreaterThan(125);
        expect(r.stderr, what).toMatch(/does not authenticate|truncated|sealed SHA-256 does not open/);
      }
    } finally {
      await putRaw(store, bucket, key, o.body, o.metadata);
    }
  });

  it('encryption: check reports the cipher and key, and fails the line without the key', async () => {
    const ok = await wv(['check']);
    expect(ok.code, show(ok)).toBe(0);
    expect(ok.stdout).toMatch(/^ok +encryption: aes-256-gcm-v1, new objects sealed with key k2 \(keyring file .*postgres\.keys\); a probe was sealed/m);
    const none = await wv(['check'], keyless());
    expect(none.code, show(none)).not.toBe(0);
    expect(none.stdout).toMatch(/^FAIL walvault.json: .*is encrypted \(key id k1\)/m);
  });
});
