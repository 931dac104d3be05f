import { constants, createWriteStream } from 'node:fs';
import { link, mkdir, open, readdir, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fromFsError } from '../common/errors.js';
import { pidAlive } from '../common/pid.js';
import { TEMP_MARK, tempPathFor } from './temp-names.js';

// basic_archive's recipe: write a temp file beside the target, fsync it, rename (or link, to refuse
// overwrites), fsync the directory. A crash leaves at most a temp file, never a partial target.

/**
 * fsync of a directory, opened so that nothing else can be: O_DIRECTORY (a FIFO or device there fails
 * instead of blocking or being opened), O_NONBLOCK, and O_NOFOLLOW unless `follow` (the callers that
 * just wrote into `dir` by path follow its last link anyway; backup-fetch, running as root, never does).
 */
export async function fsyncDir(dir: string, follow = false): Promise<void> {
  const { O_RDONLY, O_DIRECTORY, O_NONBLOCK, O_NOFOLLOW } = constants;
  const fh = await open(dir, O_RDONLY | O_DIRECTORY | O_NONBLOCK | (follow ? 0 : O_NOFOLLOW));
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Writes all of `data` at the file's position: one write(2) may write less than asked (a signal, a
 * file system near full, FUSE or network file systems), and what it left out would be lost silently.
 */
export async function writeAll(fh: FileHandle, data: Uint8Array): Promise<void> {
  for (let off = 0; off < data.length; ) {
    const { bytesWritten } = await fh.write(data, off, data.length - off);
    if (bytesWritten <= 0) throw Object.assign(new Error(`write wrote nothing (${data.length - off} bytes left)`), { code: 'EIO' });
    off += bytesWritten;
  }
}

async function fsyncFile(path: string): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export async function removeQuietly(path: string): Promise<void> {
  await unlink(path).catch(() => undefined);
}

/**
 * Streams `source` into a temp file next to `target`; `verify` runs after the last byte is written
 * and before anything becomes visible. Then fsync, rename (replace) or link (create-only), fsync dir.
 * Returns false when `mode` is 'create' and `target` already existed.
 */
export async function writeFileAtomic(
  target: string,
  source: Buffer | Readable | NodeJS.ReadableStream[],
  options: { mode?: 'replace' | 'create'; verify?: () => void | Promise<void>; fileMode?: number; signal?: AbortSignal } = {},
): Promise<boolean> {
  const temp = tempPathFor(target);
  try {
    const out = createWriteStream(temp, { flags: 'wx', mode: options.fileMode ?? 0o600 });
    if (Buffer.isBuffer(source)) {
      await pipeline(async function* () {
        yield source;
      }, out, { signal: options.signal });
    } else {
      const stages = Array.isArray(source) ? source : [source];
      await (pipeline as (...args: unknown[]) => Promise<void>)(...stages, out, options.signal ? { signal: options.signal } : {});
    }
    await options.verify?.();
    await fsyncFile(temp);
    if (options.mode === 'create') {
      try {
        await link(temp, target);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
        throw e;
      }
      await unlink(temp);
    } else {
      await rename(temp, target);
    }
    await fsyncDir(dirname(target), true);
    return true;
  } catch (e) {
    if (!Buffer.isBuffer(source)) for (const s of Array.isArray(source) ? source : [source]) (s as Readable).destroy?.();
    throw e;
  } finally {
    await removeQuietly(temp);
  }
}

/** `value` as JSON through writeFileAtomic: durable, and whole or absent (json-file.ts skips the fsync). */
export async function writeJsonAtomic(target: string, value: unknown): Promise<void> {
  await writeFileAtomic(target, Buffer.from(JSON.stringify(value)));
}

/** Removes temp files a killed walvault left in `dir` (their writer's pid is gone). */
export async function cleanupStaleTemps(dir: string): Promise<number> {
  let removed = 0;
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return 0;
  }
  for (const name of names) {
    if (!name.startsWith(TEMP_MARK)) continue;
    const pid = Number(name.split('.').at(-2));
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && pidAlive(pid)) continue;
    await removeQuietly(join(dir, name));
    removed++;
  }
  return removed;
}

/**
 * mkdir -p for data that must survive a crash: each directory created is made durable by an fsync
 * of its parent (a new directory's entry lives in the parent). The common case, an existing
 * directory, costs one stat().
 */
export async function ensureDirDurable(dir: string, mode: number): Promise<void> {
  const missing: string[] = [];
  for (let d = dir; ; d = dirname(d)) {
    try {
      await stat(d);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || dirname(d) === d) throw e;
      missing.push(d);
    }
  }
  for (const d of missing.reverse()) {
    await mkdir(d, { mode }).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'EEXIST') throw e; // a concurrent writer made it: its entry is synced below all the same
    });
    await fsyncDir(dirname(d), true);
  }
}

export async function ensureDir(dir: string, mode = 0o700): Promise<void> {
  try {
    await mkdir(dir, { recursive: true, mode });
  } catch (e) {
    throw fromFsError(e, dir, 'write');
  }
}

export async function fileExists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
