import { constants } from 'node:fs';
import { lstat, mkdir, open, readdir, rm, rmdir, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { backupError, describe as describeError, isWalvaultError, usageError } from '../common/errors.js';
import { directoryControl, type Owner } from '../common/file-trust.js';
import { fsyncDir } from '../fs/atomic.js';
import { readRecord, RECORD_NAME } from './restore-record.js';

// The target directory of backup-fetch: who may create, take and remove it. Run as root, walvault
// does no path operation in a directory another user may write: the way to <pgdata>'s parent is
// walked (file-trust.ts) and, unless root alone controls it, the directory itself is created,
// checked and removed by the restore worker running as the owner (restore-worker.ts). Root acts by
// path only where nobody else can change what a path means.

export interface TargetPlan {
  /** The symlink-free path used from now on. */
  pgdata: string;
  /** True when the owner's worker creates, takes and removes pgdata (its parent is not root's alone). */
  ownerHoldsParent: boolean;
}

/**
 * Decides, as root, who acts on `pgdata`. `owner`: the non-root user the files are for, or
 * undefined for root itself, which then needs a parent chain only root controls.
 */
export function planTarget(pgdata: string, owner: Owner | undefined): TargetPlan {
  const parent = dirname(pgdata);
  let ctl;
  try {
    ctl = directoryControl(parent, owner?.uid ?? 0, `backup-fetch target ${pgdata}, parent`);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw backupError(`the parent directory ${parent} of ${pgdata} does not exist`);
    if (!isWalvaultError(e)) throw backupError(`cannot inspect ${parent}: ${describeError(e)}`);
    throw owner
      ? backupError(`${e.message}; backup-fetch as root will not act in a directory a third user controls`)
      : usageError(
          `${e.message}; as root without --owner walvault would write as root where another user can redirect it: ` +
            `pass --owner <the data directory's owner> (the restore then runs as that user)`,
        );
  }
  const real = join(ctl.real, basename(pgdata));
  if (!owner && !ctl.rootOnly) {
    throw usageError(
      `${ctl.real} (the directory holding ${pgdata}) is writable by other users; as root without --owner walvault ` +
        `would write as root where they can redirect it: pass --owner <the data directory's owner>`,
    );
  }
  return { pgdata: real, ownerHoldsParent: !ctl.rootOnly };
}

export interface TargetState {
  /** The directory does not exist yet (its parent does). */
  created: boolean;
  /** The progress record of an interrupted restore it holds (restore-record.ts), else null. */
  record: string | null;
}

/**
 * Whether the directory is new, empty, or holds an interrupted restore (its progress record). Refuses
 * anything else that is not empty; `names` lists a few of its entries in the message (not when root
 * looks on another's behalf).
 */
export async function checkTargetDir(pgdata: string, names = true, delta = false): Promise<TargetState> {
  let st;
  try {
    st = await lstat(pgdata);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw backupError(`cannot inspect ${pgdata}: ${describeError(e)}`);
    const parent = dirname(pgdata);
    const ps = await stat(parent).catch(() => null);
    if (!ps?.isDirectory()) throw backupError(`the parent directory ${parent} of ${pgdata} does not exist`);
    if (delta) throw backupError(`${pgdata} does not exist: backup-fetch --delta restores over an existing data directory`);
    return { created: true, record: null };
  }
  if (!st.isDirectory()) throw backupError(`${pgdata} exists and is not a directory; refusing to restore into it`);
  const entries = await readdir(pgdata);
  // --delta looks at what is inside itself (restore-delta.ts), as the owner.
  if (entries.length === 0 || delta) return { created: false, record: null };
  if (entries.includes(RECORD_NAME)) {
    const record = await readRecord(pgdata);
    if (record !== null) return { created: false, record };
  }
  throw backupError(
    `${pgdata} is not empty${names ? ` (${entries.slice(0, 3).join(', ')}${entries.length > 3 ? ', ...' : ''})` : ''}; backup-fetch restores only into an empty or new directory ` +
      '(or, with --delta, over a stopped copy of the same cluster)',
  );
}

/**
 * Creates (when `created`) or takes the target directory: mode 0700 and, when `chownTo`, that owner,
 * both through a descriptor of the directory itself that is proven to be the entry at `pgdata`
 * (O_NOFOLLOW, then fstat against lstat); the parent is fsynced so a new entry survives a crash.
 * Run by root only in a parent root alone controls, else by the worker as the owner, who must then
 * own the directory already.
 */
export async function takeTargetDir(pgdata: string, created: boolean, chownTo?: Owner): Promise<void> {
  const me = process.geteuid?.();
  if (created) {
    await mkdir(pgdata, { mode: 0o700 }).catch((e: NodeJS.ErrnoException) => {
      if (me === 0 || (e.code !== 'EACCES' && e.code !== 'EPERM')) throw e;
      throw backupError(
        `cannot create ${pgdata} as uid ${me} (${e.code}): its parent is not writable by that user, and root creates it only in a ` +
          `directory root alone controls; create ${pgdata} owned by uid ${me} yourself, or restore elsewhere`,
      );
    });
  }
  const fh = await open(pgdata, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    const [fst, lst] = await Promise.all([fh.stat(), lstat(pgdata)]);
    if (fst.dev !== lst.dev || fst.ino !== lst.ino) throw backupError(`${pgdata} changed while backup-fetch took it; refusing to restore into it`);
    if (me !== 0 && fst.uid !== me) {
      throw backupError(`${pgdata} belongs to uid ${fst.uid}, not to uid ${me} the restore runs as: chown ${me} ${pgdata}, or remove it`);
    }
    await fh.chmod(0o700);
    if (chownTo) await fh.chown(chownTo.uid, chownTo.gid);
    await fh.sync();
  } finally {
    await fh.close();
  }
  if (created) await fsyncDir(dirname(pgdata));
}

/** Removes everything inside `dir` (not `dir`), and `dir` itself too when `removeDir`. */
export async function removeContents(dir: string, removeDir = false): Promise<void> {
  for (const name of await readdir(dir)) await rm(join(dir, name), { recursive: true, force: true });
  if (removeDir) await rmdir(dir);
}
