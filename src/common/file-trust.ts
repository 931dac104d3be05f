import { realpathSync, statSync, type Stats } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { configError } from './errors.js';

// The config file decides which programs walvault runs (pgBinDir), where it writes and what it
// trusts; the spool holds records that let wal-push answer 0 without the network and WAL that
// wal-fetch hands to PostgreSQL. Whoever can write either can steer walvault, and backup-fetch runs
// as root. So, like ssh's StrictModes: the file or directory, and every directory above it up to /,
// must be owned by the user running walvault or by root, and not writable by group or others
// (a directory above with the sticky bit, such as /tmp, is fine: others cannot rename our entries).
// Paths are resolved first (realpath), so a symlink cannot point the check elsewhere, and callers
// use the resolved path. Cost: one realpath and one stat per path component (measured ~20 µs).

type StatCache = Map<string, Stats>;

function statOf(path: string, cache: StatCache): Stats {
  let st = cache.get(path);
  if (!st) {
    st = statSync(path);
    cache.set(path, st);
  }
  return st;
}

/** Checks a config file before it is read; returns the resolved path to read it from. */
export function trustedConfigFile(path: string, cache: StatCache = new Map()): string {
  const uid = process.geteuid?.();
  if (uid === undefined) return path;
  const real = realpathSync.native(path); // ENOENT/EACCES: the caller reports "cannot read"
  const st = statOf(real, cache);
  if (st.isFile()) checkEntry('config file', path, real, st, uid, false);
  checkParents('config file', path, dirname(real), uid, cache);
  return real;
}

/**
 * Checks the spool directory (or, while it does not exist yet, the directories it will be created
 * in, 0700, by mkdir -p); returns its resolved path. Nothing to check when the path cannot be
 * looked at: then it cannot be written either, and the spool is only a cache.
 */
export function trustedSpool(path: string, cache: StatCache = new Map()): string {
  const uid = process.geteuid?.();
  if (uid === undefined) return path;
  const missing: string[] = [];
  let existing = resolve(path);
  let real: string;
  for (;;) {
    try {
      real = realpathSync.native(existing);
      break;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if ((code !== 'ENOENT' && code !== 'ENOTDIR') || dirname(existing) === existing) return path;
      missing.unshift(basename(existing));
      existing = dirname(existing);
    }
  }
  if (missing.length === 0) {
    checkEntry('spool directory', path, real, statOf(real, cache), uid, false);
    checkParents('spool directory', path, dirname(real), uid, cache);
  } else {
    checkParents('spool directory', path, real, uid, cache);
  }
  return join(real, ...missing);
}

function checkParents(what: string, given: string, from: string, uid: number, cache: StatCache): void {
  for (let dir = from; ; dir = dirname(dir)) {
    checkEntry(what, given, dir, statOf(dir, cache), uid, true);
    if (dirname(dir) === dir) return;
  }
}

function checkEntry(what: string, given: string, path: string, st: Stats, uid: number, parent: boolean): void {
  const subject = path === given || !parent ? `${what} ${given}` : `${what} ${given}: directory ${path}`;
  if (st.uid !== uid && st.uid !== 0) {
    throw configError(
      `${subject} is owned by uid ${st.uid}, who could make walvault (uid ${uid}) act for them; ` +
        `it must belong to uid ${uid} or root: chown ${uid} ${path}` + (what.startsWith('spool') ? ', or use a spool of your own (--spool)' : ''),
    );
  }
  const sticky = (st.mode & 0o1000) !== 0;
  if ((st.mode & 0o022) !== 0 && !(parent && sticky && st.isDirectory())) {
    const mode = (st.mode & 0o7777).toString(8).padStart(4, '0');
    throw configError(`${subject} is writable by other users (mode ${mode}), who could change what walvault does: chmod go-w ${path}`);
  }
}
