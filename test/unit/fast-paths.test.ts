import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/common/config.js';
import { repoCacheDir } from '../../src/archive/cache-dir.js';
import { parseHotArgv } from '../../src/cli/hot-path.js';
import { tryFastPush } from '../../src/push-ahead/fast-path.js';
import { askWorker } from '../../src/prefetch/client.js';
import { serveFromSpool } from '../../src/prefetch/serve.js';
import { dropEntries, prefetchDir, writeRecord } from '../../src/prefetch/spool-dir.js';
import { verifyFileSync } from '../../src/fs/verify-file.js';
import { pushRecordDir, writePushRecord } from '../../src/push-ahead/records.js';
import { repoKeyOf, repoUrlOf, s3OptionsFrom, storageUrlOf } from '../../src/storage/open.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const root = mkdtempSync(join(tmpdir(), 'wv-spool-unit-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('repository keys for the fast paths', () => {
  it.each([
    's3://bucket/prefix',
    's3://bucket',
    's3://bucket/',
    's3://bucket//a//b/',
    's3://my.bucket-1/x/y',
    'file:///srv/wal',
    'file:///srv/wal/',
    'file:///',
  ])('%s gives the same URL and cache directory as the storage layer', (url) => {
    expect(repoUrlOf(url)).toBe(storageUrlOf(url));
    expect(repoCacheDir('/spool', repoUrlOf(url)!)).toMatch(/^\/spool\/repos\/[0-9a-f]{16}$/);
  });

  it.each([undefined, '', 's3://B/x', 'http://x', 'file://relative/x'])('%j is not a repository', (url) => {
    expect(repoUrlOf(url)).toBeUndefined();
  });

  it('the spool key names the endpoint: one bucket name on two endpoints is two repositories', async () => {
    const key = (env: Record<string, string>) => repoKeyOf(loadConfig({}, env).config);
    const a = key({ WALVAULT_REPO: 's3://bucket/p', AWS_ENDPOINT_URL_S3: 'http://10.0.0.1:7480' });
    expect(key({ WALVAULT_REPO: 's3://bucket/p', AWS_ENDPOINT_URL_S3: 'http://10.0.0.2:7480' })).not.toBe(a);
    expect(key({ WALVAULT_REPO: 's3://bucket/p', AWS_ENDPOINT_URL_S3: 'HTTP://10.0.0.1:7480/' })).toBe(a);
    expect(key({ WALVAULT_REPO: 's3://bucket/p', AWS_ENDPOINT_URL_S3: 'http://10.0.0.1:7480', WALVAULT_S3_PROFILE: 'other' })).not.toBe(a);
    // Without an endpoint (AWS) the key is the URL, as in spools written before endpoints were keyed.
    expect(key({ WALVAULT_REPO: 's3://bucket/p' })).toBe('s3://bucket/p');
    // An endpoint setting does not change what a file:// repository reads.
    expect(key({ WALVAULT_REPO: 'file:///srv/wal', AWS_ENDPOINT_URL_S3: 'http://10.0.0.1:7480' })).toBe('file:///srv/wal');
    // The storage layer keys its spool files (manifest cache, high-water, gap markers) the same way.
    const config = loadConfig({}, { WALVAULT_REPO: 's3://bucket/p', AWS_ENDPOINT_URL_S3: 'http://10.0.0.1:7480', AWS_REGION: 'x' }).config;
    const { createS3Storage } = await import('../../src/storage/s3/driver.js');
    const storage = createS3Storage(s3OptionsFrom(config, { bucket: 'bucket', prefix: 'p' }));
    expect(storage.cacheKey).toBe(repoKeyOf(config));
    storage.close();
  });
});

describe('parseHotArgv (wal-push / wal-fetch without yargs)', () => {
  it('takes the shapes PostgreSQL and the README use', () => {
    expect(parseHotArgv(['wal-push', 'pg_wal/X', 'X'])).toEqual({ command: 'wal-push', args: ['pg_wal/X', 'X'], flags: {} });
    expect(parseHotArgv(['--config', '/etc/w.json', 'wal-fetch', 'X', 'pg_wal/RECOVERYXLOG'])).toEqual({
      command: 'wal-fetch',
      args: ['X', 'pg_wal/RECOVERYXLOG'],
      flags: { config: '/etc/w.json' },
    });
    expect(parseHotArgv(['wal-push', 'p', '--repo=s3://b/p', '--s3-force-path-style', '--lookahead', '0'])!.flags).toEqual({
      repo: 's3://b/p',
      's3-force-path-style': true,
      lookahead: '0',
    });
    expect(parseHotArgv(['--no-s3-force-path-style', 'wal-push', 'p'])!.flags).toEqual({ 's3-force-path-style': false });
    expect(parseHotArgv(['--s3-force-path-style', 'false', 'wal-push', 'p'])!.flags).toEqual({ 's3-force-path-style': false });
    expect(parseHotArgv(['--s3Endpoint', 'http://x', 'wal-push', 'p'])!.flags).toEqual({ 's3-endpoint': 'http://x' });
  });

  it.each([
    [[]],
    [['--help']],
    [['--version']],
    [['-h', 'wal-push', 'p']],
    [['config']],
    [['wal-push']],
    [['wal-push', 'a', 'b', 'c']],
    [['wal-fetch', 'a']],
    [['wal-push', '', 'x']],
    [['wal-push', 'p', '--unknown-flag', 'x']],
    [['wal-push', 'p', '--repo']],
    [['wal-push', 'p', '--repo', 'a', '--repo', 'b']],
    [['wal-push', 'p', '--', 'x']],
    [['--log-level', '-1', 'wal-push', 'p']],
  ])('leaves %j to the full CLI', (argv) => {
    expect(parseHotArgv(argv)).toBeNull();
  });

  it('yields the same configuration as the flags would through yargs', () => {
    const hot = parseHotArgv(['--repo', 's3://b/p', '--lookahead=3', '--prefetch-max-bytes', '64MiB', 'wal-push', 'p'])!;
    const { config } = loadConfig(hot.flags, {});
    expect(config.repo).toBe('s3://b/p');
    expect(config.lookahead).toBe(3);
    expect(config.prefetchMaxBytes).toBe(64 * 1024 * 1024);
    expect(config.prefetch).toBe(8);
  });
});

describe('verifyFileSync', () => {
  const file = join(root, 'seg');
  const data = randomBytes(3 * 1024 * 1024 + 17);
  writeFileSync(file, data);

  it('accepts the same bytes, refuses another size or another hash', () => {
    expect(verifyFileSync(file, data.length, sha(data))).toEqual({ ok: true, by: 'sha256' });
    expect(verifyFileSync(file, data.length + 1, sha(data)).reason).toMatch(/size/);
    const other = Buffer.from(data);
    other[2 * 1024 * 1024]! ^= 1;
    expect(verifyFileSync(file, data.length, sha(other)).reason).toMatch(/SHA-256/);
    expect(verifyFileSync(join(root, 'nope'), 1, sha(data)).reason).toMatch(/ENOENT/);
  });
});

describe('tryFastPush (the no-network wal-push)', () => {
  const spool = join(root, 'spool');
  const repo = 's3://bucket/cluster';
  const config = loadConfig({ repo, spool }, {}).config;
  const cache = repoCacheDir(spool, repoUrlOf(repo)!);

  async function recorded(name: string, content: Buffer) {
    const path = join(root, name);
    writeFileSync(path, content);
    const st = statSync(path);
    await writePushRecord(cache, {
      v: 1,
      name,
      size: content.length,
      sha256: sha(content),
      mtimeMs: st.mtimeMs,
      ino: st.ino,
      dev: st.dev,
      repo: repoUrlOf(repo)!,
      pushedAt: new Date().toISOString(),
    });
    return path;
  }

  it('trusts a record only while the file has the recorded size and SHA-256', async () => {
    const name = '000000010000000000000011';
    const data = randomBytes(64 * 1024);
    const path = await recorded(name, data);
    expect(await tryFastPush(config, path, name)).toMatchObject({ sha256: sha(data), size: data.length });

    // Same name, different content (a new cluster, a rewound primary): not trusted, record dropped.
    const changed = Buffer.from(data);
    changed[100]! ^= 0xff;
    writeFileSync(path, changed);
    expect(await tryFastPush(config, path, name)).toBeNull();
    expect(existsSync(join(pushRecordDir(cache), `${name}.json`))).toBe(false);
  });

  it('does not trust a truncated file, a missing file, a torn record or a record of another repository', async () => {
    const data = randomBytes(64 * 1024);
    const a = await recorded('000000010000000000000012', data);
    writeFileSync(a, data.subarray(0, 1000));
    expect(await tryFastPush(config, a, '000000010000000000000012')).toBeNull();

    const b = await recorded('000000010000000000000013', data);
    rmSync(b);
    expect(await tryFastPush(config, b, '000000010000000000000013')).toBeNull();

    const c = await recorded('000000010000000000000014', data);
    writeFileSync(join(pushRecordDir(cache), '000000010000000000000014.json'), '{"v":1,"name":"0000000100');
    expect(await tryFastPush(config, c, '000000010000000000000014')).toBeNull();

    // A name that is not a WAL file name never reaches the file system.
    expect(await tryFastPush(config, a, '../000000010000000000000012')).toBeNull();

    const d = await recorded('000000010000000000000015', data);
    const other = loadConfig({ repo: 's3://bucket/other', spool }, {}).config;
    expect(await tryFastPush(other, d, '000000010000000000000015')).toBeNull();
    expect(await tryFastPush(config, d, '000000010000000000000016')).toBeNull(); // no record under that name
  });
});

describe('prefetch spool hand-over', () => {
  const dir = prefetchDir(join(root, 'cache'), '7000000000000000001', '/var/lib/pgdata');
  const data = randomBytes(256 * 1024);
  const name = '000000010000000000000021';

  async function prefetched(content: Buffer, recordedHash = sha(content)) {
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, name), content);
    await writeRecord(dir, { v: 1, name, size: content.length, sha256: recordedHash, fetchedAt: new Date().toISOString() });
  }

  it('hands over a verified file atomically and keeps the spool copy for a repeated request', async () => {
    await prefetched(data);
    const target = join(root, 'RECOVERYXLOG');
    expect(await serveFromSpool(dir, name, target)).toMatchObject({ served: true, size: data.length });
    expect(readFileSync(target).equals(data)).toBe(true);
    expect(existsSync(join(dir, name))).toBe(true);
    expect((await readdir(root)).filter((n) => n.includes('walvault-tmp'))).toEqual([]);
  });

  it('never hands over a file that does not match its record, and deletes it', async () => {
    const corrupt = Buffer.from(data);
    corrupt[5]! ^= 1;
    await prefetched(corrupt, sha(data));
    const target = join(root, 'CORRUPTXLOG');
    const r = await serveFromSpool(dir, name, target);
    expect(r.served).toBe(false);
    expect(r.served === false && r.reason).toMatch(/SHA-256/);
    expect(existsSync(target)).toBe(false);
    expect(existsSync(join(dir, name))).toBe(false);
    expect(existsSync(join(dir, `${name}.json`))).toBe(false);
  });

  it('serves nothing without a record', async () => {
    await prefetched(data);
    rmSync(join(dir, `${name}.json`));
    expect(await serveFromSpool(dir, name, join(root, 'X'))).toEqual({ served: false });
  });

  it('drops entries by WAL name, leaving other files alone', async () => {
    await mkdir(dir, { recursive: true });
    for (const f of ['000000010000000000000001', '000000010000000000000001.json', '000000020000000000000001', '00000002.history', 'state.json', 'worker.log'])
      await writeFile(join(dir, f), 'x');
    await dropEntries(dir, (n) => n.startsWith('00000001'));
    expect((await readdir(dir)).sort()).toEqual(['000000020000000000000001', '00000002.history', 'state.json', 'worker.log'].concat(existsSync(join(dir, name)) ? [name, `${name}.json`] : []).sort());
  });

  it('asks the repository itself when no worker runs', async () => {
    const answer = await askWorker({ dir, segSize: 16 * 1024 * 1024 }, name, true, 1, { fingerprint: 'x', waitMs: 1000 });
    expect(answer).toBe('ask-repository');
  });
});

describe('helpers shared with the fast paths', () => {
  it('names temp files the way cleanupStaleTemps() recognises', async () => {
    const { cleanupStaleTemps } = await import('../../src/fs/atomic.js');
    const { tempPathFor } = await import('../../src/fs/temp-names.js');
    const dir = join(root, 'temps');
    await mkdir(dir);
    const temp = tempPathFor(join(dir, 'RECOVERYXLOG'));
    writeFileSync(temp, 'partial');
    expect(await cleanupStaleTemps(dir)).toBe(1);
    expect(existsSync(temp)).toBe(false);
  });

  it('writes log lines in one format', async () => {
    const { log, setLogCommand, setLogLevel, formatLogLine } = await import('../../src/common/log.js');
    const writes: string[] = [];
    const orig = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((chunk: string) => (writes.push(String(chunk)), true)) as typeof process.stderr.write;
    try {
      setLogCommand('wal-push');
      setLogLevel('info');
      log.info('hello\nworld');
      log.warn('careful');
    } finally {
      process.stderr.write = orig;
    }
    expect(writes).toEqual([formatLogLine('wal-push', 'info', 'hello\nworld'), formatLogLine('wal-push', 'warn', 'careful')]);
    expect(writes[0]).toBe(`walvault wal-push[${process.pid}] INFO: hello world\n`);
  });
});
