import { lstatSync, readlinkSync, realpathSync, type Stats } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { configError, isWalvaultError } from './errors.js';

// The config file decides which programs walvault runs (pgBinDir), where it writes and what it
// trusts; the spool holds records that let wal-push answer 0 without the network and WAL that
// wal-fetch hands to PostgreSQL. Whoever can write either can steer walvault, and backup-fetch runs
// as root. So, like ssh's StrictModes: the file or directory, and every directory above it up to /,
// must be owned by the user running walvault or by root, and not writable by group or others
// (a directory above with the sticky bit, such as /tmp, is fine: others cannot rename our entries).
// A symlink on the way is resolved first (realpath), so it cannot point the check elsewhere, and the
// callers use the checked path. Cost: one lstat per path component when no symlink is on the way
// (~16 µs each on the test machine), plus a realpath and a second walk when there is one.

type StatCache = Map<string, Stats>;

function lstatOf(path: string, cache: StatCache): Stats {
  let st = cache.get(path);
  if (!st) {
    st = lstatSync(path);
    cache.set(path, st);
  }
  return st;
}

/** `path` and each directory above it, bottom-up, or null when one of them is a symlink. */
function chainOf(path: string, cache: StatCache): Array<[string, Stats]> | null {
  const chain: Array<[string, Stats]> = [];
  for (let p = path; ; p = dirname(p)) {
    const st = lstatOf(p, cache);
    if (st.isSymbolicLink()) return null;
    chain.push([p, st]);
    if (dirname(p) === p) return chain;
  }
}

/** The symlink-free path of an existing `path` and its chain (ENOENT and the like are thrown). */
function resolvedChain(path: string, cache: StatCache): { real: string; chain: Array<[string, Stats]> } {
  const abs = resolve(path);
  const chain = chainOf(abs, cache);
  if (chain) return { real: abs, chain };
  const real = realpathSync.native(abs);
  const again = chainOf(real, cache);
  if (!again) throw configError(`${path}: a symlink changed while walvault checked it`);
  return { real, chain: again };
}

/** Checks a config file before it is read; returns the path to read it from. */
/** Who owns a file or directory (restored files are written as the data directory's owner). */
export interface Owner {
  uid: number;
  gid: number;
}

export function trustedConfigFile(path: string, cache: StatCache = new Map()): string {
  const uid = process.geteuid?.();
  if (uid === undefined) return path;
  const { real, chain } = resolvedChain(path, cache); // ENOENT/EACCES: the caller reports "cannot read"
  check('config file', path, chain, uid, true);
  // A FIFO would block the read forever, a device would be read without end.
  if (!chain[0]![1].isFile()) throw configError(`config file ${path} is not a regular file`);
  return real;
}

/**
 * Checks the spool directory (or, while it does not exist yet, the directories it will be created
 * in, 0700, by mkdir -p); returns the path to use. Nothing to check when the path cannot be
 * looked at: then it cannot be written either, and the spool is only a cache.
 */
export function trustedSpool(path: string, cache: StatCache = new Map()): string {
  const uid = process.geteuid?.();
  if (uid === undefined) return path;
  const missing: string[] = [];
  let existing = resolve(path);
  for (;;) {
    try {
      const { real, chain } = resolvedChain(existing, cache);
      check('spool directory', path, chain, uid, missing.length === 0);
      return join(real, ...missing);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if ((code !== 'ENOENT' && code !== 'ENOTDIR') || dirname(existing) === existing) {
        if (isWalvaultError(e)) throw e;
        return path;
      }
      missing.unshift(basename(existing));
      existing = dirname(existing);
    }
  }
}

/** chain[0] is the file or directory itself when `self`, else the nearest existing directory above it. */
function check(what: string, given: string, chain: Array<[string, Stats]>, uid: number, self: boolean, fix = true): void {
  chain.forEach(([path, st], i) => {
    const parent = i > 0 || !self;
    const subject = parent ? `${what} ${given}: directory ${path}` : `${what} ${given}`;
    if (st.uid !== uid && st.uid !== 0) {
      if (!fix) throw configError(`${subject} is owned by uid ${st.uid}, who could redirect walvault there`);
      throw configError(
        `${subject} is owned by uid ${st.uid}, who could make walvault (uid ${uid}) act for them; ` +
          `it must belong to uid ${uid} or root: chown ${uid} ${path}` + (what.startsWith('spool') ? ', or use a spool of your own (--spool)' : ''),
      );
    }
    // A directory above with the sticky bit (/tmp) is fine: others cannot rename or remove our entries.
    const sticky = parent && st.isDirectory() && (st.mode & 0o1000) !== 0;
    if ((st.mode & 0o022) !== 0 && !sticky) {
      const mode = (st.mode & 0o7777).toString(8).padStart(4, '0');
      throw configError(`${subject} is writable by other users (mode ${mode}), who could change what walvault does${fix ? `: chmod go-w ${path}` : ''}`);
    }
  });
}

/**
 * Who controls the way to directory `dir`, for backup-fetch run as root (it creates, chowns and
 * removes a directory in `dir`). Resolves `dir` component by component, following symlinks by hand,
 * and checks every directory it looks a name up in: owned by root or `ownerUid`, not writable by
 * group or others unless sticky (like /tmp: others cannot rename our entries there). Whoever may write one of them could send root
 * elsewhere; a symlink is only as trustworthy as the directory holding it, so the check is on the
 * way actually walked, not only on where it ends. Returns the symlink-free path to use from now on
 * and whether root alone controls it (every directory root's, and `dir` itself not writable by
 * others even with the sticky bit), or throws naming the first directory another user controls.
 */
export function directoryControl(dir: string, ownerUid: number, what: string): { real: string; rootOnly: boolean } {
  let rootOnly = true;
  const pending = resolve(dir).split('/').filter(Boolean).reverse();
  let current = '/';
  let links = 0;
  const visit = (path: string, st: Stats, last: boolean): void => {
    check(what, dir, [[path, st]], ownerUid, false, false);
    if (st.uid !== 0 || (last && (st.mode & 0o022) !== 0)) rootOnly = false;
  };
  for (;;) {
    const st = lstatSync(current);
    if (!st.isDirectory()) throw configError(`${what} ${dir}: ${current} is not a directory`);
    const name = pending.pop();
    visit(current, st, name === undefined);
    if (name === undefined) return { real: current, rootOnly };
    if (name === '.') continue;
    if (name === '..') {
      current = dirname(current);
      continue;
    }
    const next = join(current, name);
    const ls = lstatSync(next);
    if (!ls.isSymbolicLink()) {
      current = next;
      continue;
    }
    if (++links > 40) throw configError(`${what} ${dir}: too many symbolic links`);
    const target = readlinkSync(next);
    pending.push(...target.split('/').filter(Boolean).reverse());
    if (target.startsWith('/')) current = '/';
  }
}
