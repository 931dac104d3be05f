// `walvault check`'s encryption line: with a keyring, a probe object is sealed on its way to the
// store, carries the cipher and key id in its metadata, and opens again with the keyring; the
// repository's walvault.json says whether the repository is encrypted, and the keyring must agree.
import { randomBytes } from 'node:crypto';
import { describe } from '../common/errors.js';
import { withRetry } from '../common/retry.js';
import { checkEncryption, MANIFEST_KEY } from '../archive/manifest.js';
import type { RepoManifest } from '../archive/manifest-parse.js';
import { smallObjectMeta } from '../archive/objects.js';
import { readAll } from '../archive/small-objects.js';
import { META_CIPHER, META_KEY_ID } from '../storage/encrypting.js';
import type { Probe } from './check-report.js';
import { probeKey, type StoreCtx } from './check-store.js';

const name = 'encryption';

/** `keys`: where the keyring comes from (file path or "command"), for the line. */
export async function probeEncryption(ctx: StoreCtx, manifest: RepoManifest | null, keys: string | undefined): Promise<Probe> {
  const { storage } = ctx;
  try {
    if (manifest) checkEncryption(manifest, storage);
  } catch (e) {
    return { name, status: 'fail', detail: describe(e), fix: manifest?.encryption ? 'configure the keyring the repository was encrypted with' : 'use a new repository prefix for encrypted archiving' };
  }
  if (!storage.encryption) {
    return { name, status: 'ok', detail: 'off: objects are stored compressed, readable by anyone who may read the bucket or directory (README "Encryption")' };
  }
  const key = probeKey('enc');
  const body = randomBytes(100);
  const call = <T>(what: string, fn: (signal: AbortSignal) => Promise<T>) => withRetry(`check: ${what} ${key}`, ctx.policy, ctx.deadline, fn);
  try {
    await call('put', (signal) => storage.putIfAbsent(key, body, smallObjectMeta(body), { signal })); // a fresh key: created once
    const head = await call('head', (signal) => storage.head(key, { signal }));
    const keyId = head?.meta[META_KEY_ID];
    if (head?.meta[META_CIPHER] !== storage.encryption || !keyId) {
      return { name, status: 'fail', detail: `the probe ${key} was stored without cipher metadata`, fix: 'the store dropped user metadata: walvault cannot read its objects back there' };
    }
    const back = await call('get', async (signal) => {
      const r = await storage.get(key, { signal });
      return r ? await readAll(r.body, 64 * 1024, key) : null;
    });
    if (!back?.equals(body)) return { name, status: 'fail', detail: `the probe ${key} did not read back as written`, fix: 'see the write-read-delete line' };
    const sealedWith = manifest ? (await call('head', (signal) => storage.head(MANIFEST_KEY, { signal })))?.meta[META_KEY_ID] : undefined;
    const repo = manifest
      ? `walvault.json says the repository is encrypted (${manifest.encryption}) and is sealed with key ${sealedWith ?? '?'}, which every push reads: keep it in the keyring`
      : 'no walvault.json yet: the first wal-push creates the repository encrypted';
    return { name, status: 'ok', detail: `${storage.encryption}, new objects sealed with key ${keyId} (${keys ?? 'keyring'}); a probe was sealed, stored (${head.storedSize} bytes for ${body.length}) and opened again; ${repo}` };
  } catch (e) {
    return { name, status: 'fail', detail: `probe ${key}: ${describe(e)}`, fix: 'see the message' };
  } finally {
    await storage.delete([key]).catch(() => undefined);
  }
}
