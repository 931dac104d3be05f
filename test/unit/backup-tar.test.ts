import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { afterEach, describe, expect, it } from 'vitest';
import { createExtractor } from '../../src/backup/extract.js';
import { TarTap } from '../../src/backup/tar.js';

type Entry = { name: string; type?: 'file' | 'directory' | 'symlink' | 'link'; body?: string; mode?: number; linkname?: string };

async function makeTar(entries: Entry[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (c) => chunks.push(c as Buffer));
  const done = new Promise<void>((r) => pack.on('end', () => r()));
  for (const e of entries) {
    await new Promise<void>((resolve, reject) => {
      const header = { name: e.name, type: e.type ?? 'file', mode: e.mode ?? (e.type === 'directory' ? 0o700 : 0o600), ...(e.linkname ? { linkname: e.linkname } : {}) };
      const cb = (err?: Error | null) => (err ? reject(err) : resolve());
      if (e.type === 'file' || e.type === undefined) pack.entry(header, e.body ?? '', cb);
      else pack.entry(header, cb);
    });
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

const dirs: string[] = [];
async function scratch(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'wv-tar-'));
  dirs.push(d);
  return d;
}
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

// Small chunks, so the parser sees members split across writes.
const chunked = (buf: Buffer, size = 700) => Readable.from((function* () { for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size); })());

describe('TarTap', () => {
  it('passes the stream through unchanged and keeps backup_label, backup_manifest and pg_control', async () => {
    const big = 'x'.repeat(300_000);
    const buf = await makeTar([
      { name: 'backup_label', body: 'START WAL LOCATION: 0/700028 (file 000000010000000000000007)\n' },
      { name: 'base/', type: 'directory' },
      { name: 'base/1/1259', body: big },
      { name: 'global/pg_control', body: 'ABCDEFGH' },
      { name: 'backup_manifest', body: '{"PostgreSQL-Backup-Manifest-Version": 1}' },
    ]);
    const tap = new TarTap();
    const out: Buffer[] = [];
    await pipeline(chunked(buf), tap, async function* (src) {
      for await (const c of src) out.push(c as Buffer);
    });
    expect(Buffer.concat(out).equals(buf)).toBe(true);
    expect((await tap.label).toString()).toMatch(/^START WAL LOCATION/);
    expect(tap.files.get('backup_manifest')?.toString()).toContain('Manifest-Version');
    expect(tap.files.get('global/pg_control')?.toString()).toBe('ABCDEFGH');
    expect(tap.files.has('base/1/1259')).toBe(false);
    expect(tap.entries).toBe(5);
  });

  it('fails on a truncated archive', async () => {
    const buf = await makeTar([{ name: 'backup_label', body: 'x'.repeat(5000) }]);
    const tap = new TarTap();
    await expect(pipeline(chunked(buf.subarray(0, 2048)), tap, async function* (src) {
      for await (const _ of src) { /* drain */ }
    })).rejects.toThrow(/not a valid tar archive: Unexpected end of data/);
  });
});

describe('createExtractor', () => {
  it('extracts files and directories with PostgreSQL modes', async () => {
    const root = await scratch();
    const buf = await makeTar([
      { name: 'PG_VERSION', body: '15\n', mode: 0o644 },
      { name: 'base/', type: 'directory', mode: 0o755 },
      { name: 'base/1/1259', body: 'data' },
      { name: 'pg_wal/', type: 'directory' },
    ]);
    const ex = createExtractor(root);
    await pipeline(chunked(buf, 300), ex);
    expect(await readFile(join(root, 'PG_VERSION'), 'utf8')).toBe('15\n');
    expect(await readFile(join(root, 'base/1/1259'), 'utf8')).toBe('data');
    expect((await stat(join(root, 'PG_VERSION'))).mode & 0o777).toBe(0o600);
    expect((await stat(join(root, 'base'))).mode & 0o777).toBe(0o700);
    expect((await stat(join(root, 'base/1'))).mode & 0o777).toBe(0o700);
    expect(ex.entries()).toBe(4);
  });

  it.each([
    [{ name: '../escape', body: 'x' }, /outside the data directory/],
    [{ name: '/etc/passwd-walvault', body: 'x' }, /outside the data directory/],
    [{ name: 'base/../../escape', body: 'x' }, /outside the data directory/],
    [{ name: 'pg_tblspc/16384', type: 'symlink' as const, linkname: '/tmp' }, /type symlink/],
    [{ name: 'hard', type: 'link' as const, linkname: 'PG_VERSION' }, /type link/],
  ])('refuses %j', async (entry, message) => {
    const root = await scratch();
    const buf = await makeTar([{ name: 'PG_VERSION', body: '15\n' }, entry as Entry]);
    await expect(pipeline(chunked(buf), createExtractor(root))).rejects.toThrow(message);
    expect((await readdir(join(root, '..'))).includes('escape')).toBe(false);
  });

  it('refuses to overwrite a member that appears twice', async () => {
    const root = await scratch();
    const buf = await makeTar([{ name: 'PG_VERSION', body: '15\n' }, { name: 'PG_VERSION', body: 'evil' }]);
    await expect(pipeline(chunked(buf), createExtractor(root))).rejects.toThrow(/EEXIST/);
    expect(await readFile(join(root, 'PG_VERSION'), 'utf8')).toBe('15\n');
  });
});
