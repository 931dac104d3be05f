import { rename, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { describe } from '../common/errors.js';
import { log } from '../common/log.js';
import { identityAt, identityOf, sameIdentity, type FileIdentity } from '../fs/file-identity.js';
import { copyVerified } from './serve.js';
import { listEntries, readRecord, SEGMENT, writeRecord } from './spool-dir.js';

// Spool files the prefetch worker may vouch for (acknowledge for the shell wrapper) beyond the ones
// it has just downloaded: see src/prefetch/worker.ts.

export interface Vouched {
  name: string;
  file: string;
  identity: FileIdentity;
  sha256: string;
}

/**
 * Segments in the spool that still have the identity recorded when a worker verified them (an
 * earlier worker of this directory, killed or exiting): unchanged since, so still the verified bytes.
 */
export async function verifiedInSpool(dir: string): Promise<Vouched[]> {
  const out: Vouched[] = [];
  for (const { name } of await listEntries(dir)) {
    const rec = SEGMENT.test(name) ? readRecord(dir, name) : null;
    if (!rec?.identity) continue;
    const file = join(dir, name);
    const now = await identityAt(file);
    if (now && sameIdentity(now, rec.identity)) out.push({ name, file, identity: rec.identity, sha256: rec.sha256 });
  }
  return out;
}

/**
 * A segment of the spool that was handed over (hard-linked to %p: its ctime moved, so its identity
 * vouches for nothing any more) copied anew: hashed against its record on the way, fsynced, renamed
 * over the spool's entry, and its new identity recorded. Undefined when it is gone or does not verify.
 */
export async function stageAgain(dir: string, name: string): Promise<Vouched | undefined> {
  const rec = readRecord(dir, name);
  if (!rec) return undefined;
  const file = join(dir, name);
  const temp = join(dir, `${name}.restage`);
  try {
    const bad = copyVerified(file, temp, rec);
    if (bad) {
      log.debug(`not staging ${name} again: ${bad}`);
      return undefined;
    }
    await rename(temp, file);
    const identity = identityOf(await stat(file, { bigint: true }));
    await writeRecord(dir, { ...rec, identity });
    return { name, file, identity, sha256: rec.sha256 };
  } catch (e) {
    log.debug(`cannot stage ${name} again: ${describe(e)}`);
    return undefined;
  } finally {
    await unlink(temp).catch(() => undefined);
  }
}
