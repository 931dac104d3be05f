import { mkdtemp, readFile, rm } from 'node:fs/promises';
import type * as FsPromises from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { createExtractor } from '../../src/backup/extract.js';

// write(2) may write fewer bytes than asked; here every write of a file opened under the test's
// directory writes at most 1000 bytes, as a signal or a near-full file system could make it.
const SHORT = 1000;
const state = vi.hoisted(() => ({ under: '' }));
vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof FsPromises>();
  const open = async (...args: Parameters<typeof real.open>) => {
    const fh = await real.open(...args);
    if (!state.under || !String(args[0]).startsWith(state.under)) return fh;
    return new Proxy(fh, {
      get(target, prop) {
        if (prop === 'write') {
          return (buf: Uint8Array, off = 0, len?: number, pos?: number | null) =>
            target.write(buf, off, Math.min(len ?? buf.length - off, SHORT), pos);
        }
        const v = Reflect.get(target, prop) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
  };
  return { ...real, open, default: { ...real, open } };
});

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describe('extraction', () => {
  it('trust: a short write never truncates a restored file', async () => {
    const root = await mkdtemp(join(tmpdir(), 'wv-short-'));
    dirs.push(root);
    state.under = root;
    const content = Buffer.alloc(300_000);
    for (let i = 0; i < content.length; i++) content[i] = (i * 7) & 0xff;
    const pack = tar.pack();
    pack.entry({ name: 'base/1/1259', mode: 0o600 }, content);
    pack.finalize();
    await pipeline(pack, createExtractor(root));
    expect((await readFile(join(root, 'base/1/1259'))).equals(content)).toBe(true);
  });
});
