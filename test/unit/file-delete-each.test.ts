import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createFileStorage } from '../../src/storage/file/driver.js';

describe('file:// deleteEach', () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it('delete: deletes what it can and names each key it could not, with the reason', async () => {
    const root = await mkdtemp(join(tmpdir(), 'wv-del-each-'));
    dirs.push(root);
    const s = createFileStorage(root);
    await s.put('a/1', Buffer.from('x'), {});
    await s.put('a/3', Buffer.from('x'), {});
    // A directory where an object should be: unlink refuses it (EISDIR), the others still go.
    await mkdir(join(root, 'a', '2'));
    await writeFile(join(root, 'a', '2', 'inside'), 'x');
    const failures = await s.deleteEach(['a/1', 'a/2', 'a/3', 'a/missing']);
    expect(failures.map((f) => [f.key, f.error.code])).toEqual([['a/2', 'StorageError']]);
    expect(failures[0]!.error.message).toMatch(/cannot delete a\/2: EISDIR/);
    expect(existsSync(join(root, 'a', '1'))).toBe(false);
    expect(existsSync(join(root, 'a', '3'))).toBe(false);
    await expect(s.delete(['a/2'])).rejects.toThrow(/EISDIR/);
    expect(await s.objectLockEnabled()).toBe(false);
    expect(await s.objectLock('a/1')).toBeNull();
  });

  it('delete: a missing repository directory fails the call as a whole', async () => {
    const s = createFileStorage(join(tmpdir(), 'wv-del-each-never-created-dir'));
    await expect(s.deleteEach(['a/1'])).rejects.toThrow(/does not exist/);
  });
});
