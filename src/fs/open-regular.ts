import { closeSync, constants, fstatSync, openSync, type Stats } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';

// One way to open a file that must be a regular file: never blocking (open() of a FIFO waits for a
// writer forever, past any deadline), optionally never through a final symlink (a repository
// object is always a file walvault wrote), and typed by fstat() of the descriptor actually opened,
// so a swap between a stat() and the open cannot slip a FIFO or device through. O_NONBLOCK has no
// effect on reads of a regular file. Node built-ins only: wal-push's fast path uses it at startup.

export interface OpenRegularOptions {
  /** Refuse a symlink as the last path component (ELOOP from open()). */
  noFollow?: boolean;
}

/** Thrown (after closing the descriptor) when the path opened is not a regular file. */
export class NotRegularFileError extends Error {
  constructor(
    readonly path: string,
    /** "a FIFO", "a directory", ...: for messages. */
    readonly kind: string,
  ) {
    super(`${path} is ${kind}, not a regular file`);
    this.name = 'NotRegularFileError';
  }
}

export function fileKind(st: Stats): string {
  if (st.isFile()) return 'a regular file';
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  return 'not a regular file';
}

const flags = (o: OpenRegularOptions) => constants.O_RDONLY | constants.O_NONBLOCK | (o.noFollow ? constants.O_NOFOLLOW : 0);

/** Opens `path` read-only; open()'s own errors (ENOENT, ELOOP, ...) are thrown as they are. */
export async function openRegularFile(path: string, o: OpenRegularOptions = {}): Promise<{ fh: FileHandle; st: Stats }> {
  const fh = await open(path, flags(o));
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new NotRegularFileError(path, fileKind(st));
    return { fh, st };
  } catch (e) {
    await fh.close().catch(() => undefined);
    throw e;
  }
}

export function openRegularFileSync(path: string, o: OpenRegularOptions = {}): { fd: number; st: Stats } {
  const fd = openSync(path, flags(o));
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new NotRegularFileError(path, fileKind(st));
    return { fd, st };
  } catch (e) {
    closeSync(fd);
    throw e;
  }
}
