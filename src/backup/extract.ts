import { constants } from 'node:fs';
import { lstat, mkdir, open, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, isAbsolute, resolve, sep } from 'node:path';
import { Writable } from 'node:stream';
import type tar from 'tar-stream';
import { backupError, fromFsError, isWalvaultError } from '../common/errors.js';
import { writeAll } from '../fs/atomic.js';
import { normalizeName, TarSink, wrapTarError } from './tar.js';
import { PAX_POSITION } from './tar-encode.js';

// backup-fetch's side of the tar stream: extract it into the new data directory, refusing anything
// but plain files and directories inside that directory.

type Header = tar.Header;

/** `root`-relative destination for a tar member, or a BackupError if it could escape `root`. */
export function safeDestination(root: string, name: string): string {
  const clean = normalizeName(name);
  if (clean === '' || clean === '.') return root;
  if (clean.includes('\0') || isAbsolute(clean) || clean.split('/').some((p) => p === '..')) {
    throw backupError(`the backup contains the path ${JSON.stringify(name)}, which would land outside the data directory; refusing it`);
  }
  const dest = resolve(root, clean);
  if (dest !== root && !dest.startsWith(root + sep)) {
    throw backupError(`the backup contains the path ${JSON.stringify(name)}, which would land outside the data directory; refusing it`);
  }
  return dest;
}

/**
 * Removes the files a failed attempt of one data object may have created (format 2: the object is
 * then fetched again, and its files are created exclusively again). Only plain names under `root`
 * (safeDestination), unlink never follows a link, and a file that is not there is fine.
 */
export async function removeFiles(root: string, paths: string[]): Promise<void> {
  for (const p of paths) {
    const dest = safeDestination(root, p);
    if (dest === root) continue;
    await unlink(dest).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'ENOENT') throw fromFsError(e, dest, 'write');
    });
  }
}

/** The position a member's bytes go to in an existing file (PAX_POSITION), or undefined for a new file. */
function positionOf(header: Header, keepModes: boolean): number | undefined {
  const v = (header.pax as Record<string, string> | undefined)?.[PAX_POSITION];
  if (v === undefined) return undefined;
  // Only walvault's own format-2 stream carries it; a format-1 tar is pg_basebackup's.
  if (!keepModes || !/^\d{1,16}$/.test(v) || !Number.isSafeInteger(Number(v))) {
    throw backupError(`the backup's member ${JSON.stringify(header.name)} carries a position ${JSON.stringify(v)} it may not have; refusing it`);
  }
  return Number(v);
}

/**
 * Opens an existing plain file with one name (a hard link would take the writes elsewhere too),
 * never through a link.
 */
export async function openPlainFile(path: string, flags: number): Promise<FileHandle> {
  const fh = await open(path, flags | O_NOFOLLOW);
  try {
    const st = await fh.stat();
    if (!st.isFile() || st.nlink !== 1) throw backupError(`${path} is not a plain file with one name; refusing to write to it`);
    return fh;
  } catch (e) {
    await fh.close();
    throw e;
  }
}

async function writeAllAt(fh: FileHandle, data: Buffer, position: number): Promise<void> {
  for (let off = 0; off < data.length; ) {
    const { bytesWritten } = await fh.write(data, off, data.length - off, position + off);
    if (bytesWritten <= 0) throw Object.assign(new Error(`write wrote nothing (${data.length - off} bytes left)`), { code: 'EIO' });
    off += bytesWritten;
  }
}

export interface ExtractOptions {
  /** fsync every file and directory before the end resolves (default true; off only to measure its cost). */
  durable?: boolean;
  /**
   * Format 2 (file list): keep each member's group read (and search) bit, as initdb -g sets them,
   * and each file's modification time. Nothing more of the mode: setuid, setgid, sticky, group
   * write and anything for others stay off whatever the list says.
   */
  keepModes?: boolean;
}

/** The permission bits a restored file or directory gets from a member's mode (keepModes). */
export function restoredMode(mode: number, dir: boolean): number {
  return dir ? 0o700 | (mode & 0o050) : 0o600 | (mode & 0o040);
}

export interface Extractor extends Writable {
  entries(): number;
  /** Files and directories fsynced so far. */
  synced(): { files: number; dirs: number };
  /** Resolves once the member being written (if any) and every pending fsync have finished. */
  settled(): Promise<void>;
}

const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW, O_RDONLY, O_DIRECTORY } = constants;
/** File fsyncs in flight at once (each holds one open descriptor). */
const MAX_PENDING_SYNCS = 16;

/**
 * A Writable that extracts the tar written into it under `root` (which must exist): plain files
 * (0600) and directories (0700) only (keepModes: 0640 and 0750 where the member says so), as
 * PostgreSQL creates them, files created exclusively (O_EXCL: a member appearing twice fails),
 * never through a link. Symlinks, hard links and devices are refused: a single-tablespace backup
 * has none, and following one could write outside the data directory. Each file is fsynced before it is closed and each directory once at the end, so the
 * tree is durable when the stream finishes. It never changes ownership: a restore for another user
 * runs this in a process with that user's ids (restore-worker.ts), so the kernel, not a check here,
 * keeps a symlink swapped in by a racing process from taking the writes anywhere that user could
 * not write anyway.
 */
export function createExtractor(root: string, opts: ExtractOptions = {}): Extractor {
  const durable = opts.durable ?? true;
  const keepModes = opts.keepModes ?? false;
  const sink = new TarSink();
  const extract = sink.extract;
  let entries = 0;
  const synced = { files: 0, dirs: 0 };
  const made = new Set<string>([root]);

  const ensureDir = async (dir: string, mode = 0o700): Promise<void> => {
    if (made.has(dir)) return;
    await ensureDir(dirname(dir));
    try {
      await mkdir(dir, { mode });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    // mkdir's EEXIST does not say what exists: a symlink there was not put there by this backup.
    const st = await lstat(dir);
    if (!st.isDirectory()) throw backupError(`${dir} became a ${st.isSymbolicLink() ? 'symbolic link' : 'non-directory'} during the restore; refusing to write through it`);
    made.add(dir);
  };

  const handle = async (header: Header, stream: NodeJS.ReadableStream & { resume(): void }): Promise<void> => {
    const dest = safeDestination(root, header.name);
    if (header.type === 'directory') {
      stream.resume();
      await ensureDir(dest, keepModes ? restoredMode(header.mode ?? 0, true) : 0o700);
      return;
    }
    if (header.type !== 'file' && header.type !== 'contiguous-file') {
      stream.resume();
      throw backupError(
        `the backup contains ${JSON.stringify(header.name)} of type ${header.type}; only files and directories are restored ` +
          '(backups with tablespaces are not supported yet)',
      );
    }
    if (syncError) throw syncError;
    await ensureDir(dirname(dest));
    const at = positionOf(header, keepModes);
    // An extent of a file in pieces goes into the file created (empty) with the directories.
    const fh =
      at === undefined
        ? await open(dest, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, keepModes ? restoredMode(header.mode ?? 0, false) : 0o600)
        : await openPlainFile(dest, O_WRONLY);
    let handedOff = false;
    try {
      if (at === undefined) for await (const chunk of stream as AsyncIterable<Buffer>) await writeAll(fh, chunk);
      else {
        let pos = at;
        for await (const chunk of stream as AsyncIterable<Buffer>) {
          await writeAllAt(fh, chunk, pos);
          pos += chunk.length;
        }
      }
      if (keepModes && header.mtime && at === undefined) await fh.utimes(header.mtime, header.mtime);
      if (durable) {
        // The fsync runs while the next members are written: the disk flushes one file while
        // the stream fills the next (the end waits for all of them).
        track(fh.sync().then(() => void synced.files++).finally(() => fh.close()));
        handedOff = true;
      }
    } finally {
      if (!handedOff) await fh.close();
    }
    if (pending.size >= MAX_PENDING_SYNCS) await Promise.race(pending);
  };

  const pending = new Set<Promise<void>>();
  let syncError: unknown;
  const track = (p: Promise<void>): void => {
    const q: Promise<void> = p
      .catch((e: unknown) => {
        syncError ??= fromFsError(e, `a file under ${root}`, 'write');
      })
      .finally(() => pending.delete(q));
    pending.add(q);
  };

  // Deepest first, so each directory is synced after the entries created in it.
  const syncDirs = async (): Promise<void> => {
    await Promise.all(pending);
    if (syncError) throw syncError;
    if (!durable) return;
    for (const dir of [...made].sort((a, b) => b.length - a.length)) {
      const fh = await open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
      try {
        await fh.sync();
        synced.dirs++;
      } finally {
        await fh.close();
      }
    }
  };

  let current: Promise<void> = Promise.resolve();
  extract.on('entry', (header: Header, stream, next) => {
    entries++;
    // A failure is reported once, through next(); tar-stream then destroys the entry stream with
    // the same error, which must not become an uncaught 'error' event.
    stream.on('error', () => undefined);
    current = handle(header, stream as never);
    current.then(
      () => next(),
      (e: unknown) => {
        stream.resume();
        next(isWalvaultError(e) ? e : fromFsError(e, `${root}/${normalizeName(header.name)}`, 'write'));
      },
    );
  });

  const w = new Writable({
    highWaterMark: 1024 * 1024,
    write(chunk: Buffer, _enc, cb) {
      sink.write(chunk, (e) => cb(e ? wrapTarError(e, 'the backup') : null));
    },
    final(cb) {
      sink.end((e) => {
        if (e) return cb(wrapTarError(e, 'the backup'));
        syncDirs().then(
          () => cb(null),
          (err: unknown) => cb(fromFsError(err, `a directory under ${root}`, 'write')),
        );
      });
    },
    destroy(err, cb) {
      sink.destroy();
      cb(err);
    },
  });
  const settled = async (): Promise<void> => {
    await current.catch(() => undefined);
    await Promise.all(pending);
  };
  return Object.assign(w, { entries: () => entries, synced: () => ({ ...synced }), settled });
}
