// A streamed PutObject body (large WAL segments, issue 8 item 9) on a file:// repository: published
// only when its bytes are the ones hashed when it was prepared, like S3's Content-MD5 check.
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { createFileStorage } from '../../src/storage/file/driver.js';
import { readAll } from '../../src/archive/small-objects.js';

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

const data = Buffer.alloc(3 * 1024 * 1024, 7);
const md5 = createHash('md5').update(data).digest('base64');
const chunks = (b: Buffer) => () => Readable.from([b.subarray(0, 1024 * 1024), b.subarray(1024 * 1024)]);

describe('trust: large segments are pushed in bounded memory (streamed body, file://)', () => {
  it('stores a streamed body and reads back the same bytes', async () => {
    const root = await mkdtemp(join(tmpdir(), 'wv-body-'));
    dirs.push(root);
    const s = createFileStorage(root);
    expect(await s.putIfAbsent('wal/a', { size: data.length, md5, open: chunks(data) }, { codec: 'none' })).toEqual({ created: true });
    const got = await s.get('wal/a');
    expect((await readAll(got!.body, data.length)).equals(data)).toBe(true);
    expect(got!.info.storedSize).toBe(data.length);
  });

  it('refuses a body whose bytes changed since they were hashed: IntegrityError, nothing published', async () => {
    const root = await mkdtemp(join(tmpdir(), 'wv-body-'));
    dirs.push(root);
    const s = createFileStorage(root);
    const changed = Buffer.from(data);
    changed[2 * 1024 * 1024] = 8;
    await expect(s.putIfAbsent('wal/b', { size: data.length, md5, open: chunks(changed) }, { codec: 'none' })).rejects.toMatchObject({
      code: 'IntegrityError',
    });
    expect(await s.head('wal/b')).toBeNull();
    expect(await readdir(join(root, 'wal'))).toEqual([]);
  });
});
