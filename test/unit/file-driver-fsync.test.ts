// The file:// driver's directories are part of what makes an object durable: a new shard directory
// whose entry in its parent was never synced can vanish, with every segment in it, after a power cut.
// Observed for real: FileHandle.sync() of the handles node:fs/promises opens, recorded by path.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';

const synced: string[] = [];
vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs/promises')>();
  const open: typeof real.open = async (...args: Parameters<typeof real.open>) => {
    const fh = await real.open(...args);
    const sync = fh.sync.bind(fh);
    fh.sync = async () => {
      await sync();
      synced.push(String(args[0]));
    };
    return fh;
  };
  return { ...real, default: { ...real, open }, open };
});

const { createFileStorage } = await import('../../src/storage/file/driver.js');

const root = mkdtempSync(join(tmpdir(), 'wv-fsync-unit-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('file:// repository directories', () => {
  it('trust: file repository fsyncs the directories it creates', async () => {
    const storage = createFileStorage(root);
    const meta = { sha256: '0'.repeat(64), size: '1', codec: 'none' };
    synced.length = 0;
    const res = await storage.putIfAbsent('wal/0000000100000000/000000010000000000000001', Buffer.from('x'), meta);
    expect(res.created).toBe(true);
    // wal/ is new: its entry in the root; the shard directory: its entry in wal/; the object: its
    // entry in the shard directory.
    expect(synced).toEqual(expect.arrayContaining([root, join(root, 'wal'), join(root, 'wal', '0000000100000000')]));

    // Into an existing directory: only the object's own directory entry (and the object) are synced.
    synced.length = 0;
    await storage.putIfAbsent('wal/0000000100000000/000000010000000000000002', Buffer.from('y'), meta);
    expect(synced.filter((p) => !p.includes('000000010000000000000002'))).toEqual([join(root, 'wal', '0000000100000000')]);
  });
});
