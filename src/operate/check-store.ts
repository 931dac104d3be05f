// The probes of `walvault check` that work through the Storage interface, so file:// and s3://
// repositories get the same ones: write/read/delete under state/check/ (a refused delete is fine
// for append-only credentials), a missing key, no-overwrite
// (file:// only: on S3 the raw If-None-Match probe is needed, putIfAbsent would hide a store that
// ignores it) and walvault.json; plus the file:// directory itself (exists, owner and mode, fsync).
import { randomBytes } from 'node:crypto';
import { access, constants, open, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, isWalvaultError } from '../common/errors.js';
import { withRetry, type Deadline, type RetryPolicy } from '../common/retry.js';
import { readRemoteManifest } from '../archive/manifest.js';
import type { RepoManifest } from '../archive/manifest-parse.js';
import { smallObjectMeta } from '../archive/objects.js';
import { readAll } from '../archive/small-objects.js';
import { fsyncDir, writeAll } from '../fs/atomic.js';
import { TEMP_MARK } from '../fs/temp-names.js';
import type { Storage } from '../storage/types.js';
import type { Probe } from './check-report.js';

export const CHECK_PREFIX = 'state/check/';

export interface StoreCtx {
  storage: Storage;
  policy: RetryPolicy;
  deadline: Deadline;
}

export const probeKey = (what: string) => `${CHECK_PREFIX}${what}-${Date.now().toString(36)}-${randomBytes(6).toString('hex')}`;

/** The fix for a storage failure, from its class. */
function fixFor(e: unknown, permission: string): string {
  if (!isWalvaultError(e)) return 'see the message';
  switch (e.code) {
    case 'AccessDenied':
      return `grant ${permission} (S3), or make the directory writable by this user (file://)`;
    case 'MissingBucket':
      return 'create the bucket or directory (or mount it)';
    case 'RepositoryFull':
      return 'free space on the repository file system';
    case 'StorageUnavailable':
      return 'the store is unreachable or failing: check the endpoint and the store';
    default:
      return 'see the message';
  }
}

/** Delete refused with the rest allowed: append-only credentials, what a pusher should have. */
const isDeleteDenied = (step: string, e: unknown) => step === 'delete' && isWalvaultError(e) && e.code === 'AccessDenied';

/**
 * `deleteRequired`: this configuration runs `walvault delete` (it sets a retention rule), so a
 * refused delete is a failure. Without it a refused delete is fine: nothing else walvault does
 * deletes (a failed backup-push's leftovers are then left to `delete`), and credentials that cannot
 * delete are what the database server should hold (README "Append-only credentials").
 */
export async function probeWriteReadDelete(ctx: StoreCtx, opts: { deleteRequired?: boolean } = {}): Promise<Probe> {
  const name = 'write-read-delete';
  const key = probeKey('rw');
  const body = Buffer.from(`walvault check ${new Date().toISOString()} ${randomBytes(16).toString('hex')}\n`);
  const meta = smallObjectMeta(body);
  const call = <T>(what: string, fn: (signal: AbortSignal) => Promise<T>) => withRetry(`check: ${what} ${key}`, ctx.policy, ctx.deadline, fn);
  const started = Date.now();
  let step = 'put';
  let gone = false;
  try {
    // Create-only, as every write of walvault: a fresh random key, so an existing one is a store fault.
    const put = await call('put', (signal) => ctx.storage.putIfAbsent(key, body, meta, { signal }));
    if (!put.created) return { name, status: 'fail', detail: `a create-only write of the new key ${key} found it already there`, fix: 'the store answers for keys it does not hold (a gateway or cache in front of it): check s3Endpoint' };
    step = 'get';
    const got = await call('get', async (signal) => {
      const r = await ctx.storage.get(key, { signal });
      return r ? { info: r.info, bytes: await readAll(r.body, 64 * 1024, key) } : null;
    });
    if (!got) return { name, status: 'fail', detail: `${key} was written but a GET right after says it does not exist`, fix: 'the store is not read-after-write consistent for new keys, or a cache/proxy answers for it: walvault needs both' };
    const sameMeta = ['sha256', 'size', 'codec'].every((k) => got.info.meta[k] === meta[k]);
    if (!got.bytes.equals(body) || !sameMeta) {
      const what = got.bytes.equals(body) ? `its metadata (${JSON.stringify(got.info.meta).slice(0, 200)})` : `${got.bytes.length} bytes that differ from the ${body.length} written`;
      return { name, status: 'fail', detail: `${key} read back with ${what}`, fix: 'something between walvault and the store changes objects or drops x-amz-meta-* headers; walvault refuses such objects' };
    }
    step = 'delete';
    await call('delete', (signal) => ctx.storage.delete([key], { signal }));
    step = 'head after delete';
    const after = await call('head', (signal) => ctx.storage.head(key, { signal }));
    gone = after === null;
    if (after) return { name, status: 'fail', detail: `${key} still exists after DeleteObjects`, fix: 'the store did not delete it: check the bucket (versioning, Object Lock, a delete policy)' };
    return { name, status: 'ok', detail: `put, get (${body.length} bytes and metadata equal), delete and gone: ${key} in ${Date.now() - started} ms` };
  } catch (e) {
    if (isDeleteDenied(step, e)) {
      gone = true; // nothing to clean up that this user may remove
      const readWrite = `put and get work (${body.length} bytes and metadata equal), delete is refused (${describe(e)}); the probe object ${key} stays`;
      if (opts.deleteRequired) {
        return {
          name,
          status: 'fail',
          detail: readWrite,
          fix: 'this configuration sets a retention rule (retainFull/retainDays), so it is for walvault delete, which needs s3:DeleteObject (and s3:DeleteObjectVersion on a versioned bucket) on the prefix; a pusher\'s configuration (append-only credentials) has no retention rule',
        };
      }
      return { name, status: 'ok', detail: `${readWrite}: append-only credentials, enough for wal-push, backup-push, wal-fetch and backup-fetch; only walvault delete needs s3:DeleteObject` };
    }
    const permission = step === 'put' ? 's3:PutObject' : step === 'delete' ? 's3:DeleteObject' : 's3:GetObject';
    return { name, status: 'fail', detail: `${step} of ${key} failed: ${describe(e)}`, fix: fixFor(e, `${permission} on the prefix`) };
  } finally {
    // A probe that failed half way never leaves its object behind (best effort: the store may be why it failed).
    if (!gone) await ctx.storage.delete([key]).catch(() => undefined);
  }
}

export async function probeMissingKey(ctx: StoreCtx): Promise<Probe> {
  const name = 'missing-key';
  const key = probeKey('missing');
  try {
    const got = await withRetry(`check: get ${key}`, ctx.policy, ctx.deadline, (signal) => ctx.storage.get(key, { signal }));
    if (got) {
      got.body.destroy();
      return { name, status: 'fail', detail: `a GET of the never-written key ${key} returned an object`, fix: 'the endpoint is not a plain S3 bucket (a gateway answering every key): check s3Endpoint' };
    }
    const how = ctx.storage.url.startsWith('file://') ? 'ENOENT' : '404 NoSuchKey';
    return { name, status: 'ok', detail: `a missing key answers ${how}: wal-fetch can tell "not archived" from an error` };
  } catch (e) {
    if (isWalvaultError(e) && e.code === 'AccessDenied') {
      return {
        name,
        status: 'fail',
        detail: `a GET of a missing key answers 403 AccessDenied, not 404: the credentials lack s3:ListBucket, so walvault would treat every "not found" (the end of the archive in a restore, a new segment in wal-push) as an error`,
        fix: 'grant s3:ListBucket on the bucket',
      };
    }
    return { name, status: 'fail', detail: `a GET of a missing key failed: ${describe(e)}`, fix: fixFor(e, 's3:GetObject and s3:ListBucket') };
  }
}

/** file://: link() must refuse to replace an object, as wal-push relies on (If-None-Match on S3). */
export async function probeNoOverwrite(ctx: StoreCtx): Promise<Probe> {
  const name = 'no-overwrite';
  const key = probeKey('once');
  const first = Buffer.from('walvault check: first\n');
  const second = Buffer.from('walvault check: second\n');
  try {
    const a = await ctx.storage.putIfAbsent(key, first, smallObjectMeta(first));
    const b = await ctx.storage.putIfAbsent(key, second, smallObjectMeta(second));
    const kept = await ctx.storage.get(key);
    const bytes = kept ? await readAll(kept.body, 1024, key) : null;
    if (!a.created || b.created || !bytes?.equals(first)) {
      return { name, status: 'fail', detail: `a second create-only write of ${key} replaced the first`, fix: 'the file system does not honour link() semantics: use a local or NFS/SMB file system that does' };
    }
    return { name, status: 'ok', detail: 'a second create-only write of the same key was refused (link() does not replace)' };
  } catch (e) {
    return { name, status: 'fail', detail: `create-only writes of ${key} failed: ${describe(e)}`, fix: fixFor(e, 's3:PutObject') };
  } finally {
    await ctx.storage.delete([key]).catch(() => undefined);
  }
}

export interface ManifestProbe {
  probe: Probe;
  manifest: RepoManifest | null;
}

export async function probeManifest(ctx: StoreCtx): Promise<ManifestProbe> {
  const name = 'walvault.json';
  try {
    const m = await readRemoteManifest(ctx.storage, ctx.policy, ctx.deadline);
    if (!m) return { manifest: null, probe: { name, status: 'ok', detail: 'absent: a new repository; the first wal-push creates it from the WAL it archives' } };
    const pg = m.pgVersion ? `PostgreSQL ${m.pgVersion}, ` : '';
    return {
      manifest: m,
      probe: { name, status: 'ok', detail: `system identifier ${m.systemIdentifier}, ${pg}${m.walSegmentSize / (1024 * 1024)} MiB WAL segments, created ${m.createdAt}` },
    };
  } catch (e) {
    return {
      manifest: null,
      probe: { name, status: 'fail', detail: describe(e), fix: 'walvault.json is damaged or not walvault\'s: find out who changed it; wal-push refuses to archive until it is valid' },
    };
  }
}

const modeText = (m: number) => (m & 0o7777).toString(8).padStart(4, '0');

/** file://: the directory exists (a missing mount point is never created), who owns it and who may write it. */
export async function probeDirectory(dir: string): Promise<Probe[]> {
  const uid = process.geteuid?.();
  let st;
  try {
    st = await stat(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'EUNKNOWN';
    return [{ name: 'directory', status: 'fail', detail: `${dir}: ${code}`, fix: code === 'ENOENT' ? `create it (mkdir ${dir}, owned by the user PostgreSQL runs as) or mount the share` : 'check the path and its permissions' }];
  }
  if (!st.isDirectory()) return [{ name: 'directory', status: 'fail', detail: `${dir} is not a directory`, fix: 'point repo at a directory' }];
  const out: Probe[] = [];
  const writable = await access(dir, constants.W_OK | constants.X_OK).then(() => true, () => false);
  out.push(
    writable
      ? { name: 'directory', status: 'ok', detail: `${dir} exists and is writable by uid ${uid ?? '?'}` }
      : { name: 'directory', status: 'fail', detail: `${dir} is not writable by uid ${uid ?? '?'} (owner uid ${st.uid}, mode ${modeText(st.mode)})`, fix: `chown ${uid ?? '<user>'} ${dir} (the user PostgreSQL runs as)` },
  );
  const problems: string[] = [];
  if (uid !== undefined && st.uid !== uid && st.uid !== 0) problems.push(`owned by uid ${st.uid}, who can delete or change the archive`);
  if ((st.mode & 0o002) !== 0) problems.push('writable by every user, who can delete or replace archived WAL');
  else if ((st.mode & 0o020) !== 0) problems.push('writable by its group, whose members can delete or replace archived WAL');
  out.push(
    problems.length === 0
      ? { name: 'permissions', status: 'ok', detail: `owner uid ${st.uid}, mode ${modeText(st.mode)}: only its owner${st.uid === 0 ? ' (root)' : ''} can change it` }
      : { name: 'permissions', status: 'warn', detail: `${dir} (owner uid ${st.uid}, mode ${modeText(st.mode)}) is ${problems.join(' and ')}`, fix: `chown ${uid ?? '<user>'} ${dir}; chmod go-w ${dir}` },
  );
  return out;
}

/** file://: a 1 MiB file written, fsynced and its directory fsynced, as wal-push does for every segment. */
export async function probeFsync(dir: string): Promise<Probe> {
  const name = 'fsync';
  const path = join(dir, `${TEMP_MARK}check.${process.pid}.${randomBytes(4).toString('hex')}`);
  const started = process.hrtime.bigint();
  try {
    const fh = await open(path, 'wx', 0o600);
    try {
      await writeAll(fh, randomBytes(1024 * 1024));
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsyncDir(dir, true);
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    return { name, status: 'ok', detail: `a 1 MiB file and its directory written and fsynced in ${ms.toFixed(1)} ms` };
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? describe(e);
    return { name, status: 'fail', detail: `writing and fsyncing a file in ${dir} failed: ${code}`, fix: code === 'EINVAL' ? 'this file system does not support fsync: walvault cannot make archived WAL durable there; use another' : 'check the file system (space, permissions, mount)' };
  } finally {
    await unlink(path).catch(() => undefined);
  }
}
