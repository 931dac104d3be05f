// walvault check: every probe of a repository (and with --pg, of the server archiving into it),
// each to the end even after a failure where the later ones still mean something. The findings
// are returned; src/commands/check.ts prints them and picks the exit code.
import { randomBytes } from 'node:crypto';
import { stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { retryPolicy, type LoadedConfig } from '../common/config.js';
import { describe } from '../common/errors.js';
import { Deadline, type RetryPolicy } from '../common/retry.js';
import { ensureDir } from '../fs/atomic.js';
import { TEMP_MARK } from '../fs/temp-names.js';
import type { RepoManifest } from '../archive/manifest-parse.js';
import { openRepository } from '../archive/repository.js';
import { repoCacheDir } from '../archive/cache-dir.js';
import { parseRepoUrl, repoKeyOf, s3OptionsFrom, storageUrlOf, type RepoLocation } from '../storage/open.js';
import type { Storage } from '../storage/types.js';
import type { Probe } from './check-report.js';
import { runPgChecks } from './check-pg.js';
import { probeObjectLock } from './check-lock.js';
import { probeEncryption } from './check-encryption.js';
import { probeDirectory, probeFsync, probeManifest, probeMissingKey, probeNoOverwrite, probeWriteReadDelete, type StoreCtx } from './check-store.js';

export interface CheckOptions {
  pg: boolean;
  dbname?: string;
  env?: NodeJS.ProcessEnv;
}

export interface CheckResult {
  repo: string | undefined;
  probes: Probe[];
}

const skipped = (names: string[], why: string): Probe[] => names.map((name) => ({ name, status: 'skip', detail: `not checked: ${why}` }));

export async function runCheck(loaded: LoadedConfig, opts: CheckOptions): Promise<CheckResult> {
  const { config, configFile } = loaded;
  const probes: Probe[] = [];
  let loc: RepoLocation;
  let storage: Storage;
  try {
    loc = parseRepoUrl(config.repo);
    storage = await openRepository(config);
  } catch (e) {
    probes.push({ name: 'configuration', status: 'fail', detail: describe(e), fix: 'fix the setting named (walvault config shows every value and where it comes from)' });
    return { repo: undefined, probes };
  }
  const repo = storage.url;
  const keys = config.encryptionKeyFile ? `keyring file ${config.encryptionKeyFile}` : config.encryptionKeyCommand ? 'keyring from encryptionKeyCommand' : undefined;
  probes.push({ name: 'configuration', status: 'ok', detail: `repository ${repo}; ${configFile ? `config file ${configFile}` : 'no config file (flags and environment)'}; every setting valid` });
  const repoSpool = repoCacheDir(config.spool, repoKeyOf(config) ?? storageUrlOf(config.repo));
  probes.push(await probeSpool(config.spool, repoSpool));

  // Fewer retries than wal-push: a check should say what is wrong, not wait out a broken store.
  const policy: RetryPolicy = { ...retryPolicy(config), retries: Math.min(config.retries, 2) };
  const ctx = (): StoreCtx & { done(): void } => {
    const deadline = new Deadline(config.deadline * 1000);
    return { storage, policy, deadline, done: () => deadline.dispose() };
  };
  const withCtx = async <T>(fn: (c: StoreCtx) => Promise<T>): Promise<T> => {
    const c = ctx();
    try {
      return await fn(c);
    } finally {
      c.done();
    }
  };

  // A retention rule in this configuration means it runs `walvault delete`: deleting must work.
  const deleteRequired = config.retainFull !== undefined || config.retainDays !== undefined;
  let manifest: RepoManifest | null = null;
  let usable = false;
  try {
    const storeProbes = ['write-read-delete', 'missing-key'];
    if (loc.scheme === 'file') {
      const dir = await probeDirectory(loc.dir);
      probes.push(...dir);
      if (dir[0]!.status === 'fail') {
        probes.push(...skipped(['fsync', ...storeProbes, 'no-overwrite', 'walvault.json', 'encryption'], 'the directory is not usable'));
      } else {
        probes.push(await probeFsync(loc.dir));
        probes.push(await withCtx((c) => probeWriteReadDelete(c, { deleteRequired })));
        probes.push(await withCtx(probeMissingKey));
        probes.push(await withCtx(probeNoOverwrite));
        const m = await withCtx(probeManifest);
        probes.push(m.probe, await withCtx((c) => probeEncryption(c, m.manifest, keys)));
        manifest = m.manifest;
        usable = probes.find((p) => p.name === 'write-read-delete')?.status === 'ok';
      }
    } else {
      const { probeEndpoint, clockFinding, s3Diagnostics } = await import('../storage/s3/diagnose.js');
      const s3 = s3OptionsFrom(config, loc, join(repoSpool, 's3-capabilities.json'));
      const ep = await probeEndpoint(s3, config.connectTimeout * 1000 + config.attemptTimeout * 1000);
      probes.push({ name: 'endpoint', ...ep.endpoint });
      if (ep.endpoint.status === 'fail') {
        probes.push(...skipped(['clock', 'credentials', 'bucket', ...storeProbes, 'conditional-writes', 'object-lock', 'walvault.json', 'encryption'], 'the endpoint cannot be reached'));
      } else {
        probes.push({ name: 'clock', ...clockFinding(ep.clock) });
        const diag = s3Diagnostics(s3);
        try {
          const access = await withCtx((c) => diag.access(AbortSignal.any([c.deadline.signal, AbortSignal.timeout(config.attemptTimeout * 1000)])));
          probes.push({ name: 'credentials', ...access.credentials }, { name: 'bucket', ...access.bucket });
          if (access.bucket.status !== 'ok') {
            probes.push(...skipped([...storeProbes, 'conditional-writes', 'object-lock', 'walvault.json', 'encryption'], access.bucket.status === 'skip' ? 'the credentials failed' : 'the bucket is not usable'));
          } else {
            probes.push(await withCtx((c) => probeWriteReadDelete(c, { deleteRequired })));
            probes.push(await withCtx(probeMissingKey));
            probes.push({ name: 'conditional-writes', ...(await withCtx((c) => diag.conditionalWrites(c.deadline.signal))) });
            probes.push(await withCtx((c) => probeObjectLock(c, config)));
            const m = await withCtx(probeManifest);
            probes.push(m.probe, await withCtx((c) => probeEncryption(c, m.manifest, keys)));
            manifest = m.manifest;
            usable = probes.find((p) => p.name === 'write-read-delete')?.status === 'ok';
          }
        } finally {
          diag.close();
        }
      }
    }
    if (opts.pg) {
      probes.push(
        ...(await runPgChecks({
          dbname: opts.dbname,
          env: opts.env ?? process.env,
          configFile,
          manifest,
          storage: usable ? storage : undefined,
          policy,
          waitMs: config.deadline * 1000,
        })),
      );
    }
  } finally {
    storage.close();
  }
  return { repo, probes };
}

/**
 * The spool: created if missing (as wal-push would), writable, owned by this user and writable by
 * nobody else (loading the configuration refused anything else); this repository's directory in it
 * (prefetched WAL, upload records) readable by nobody else.
 */
async function probeSpool(spool: string, repoSpool: string): Promise<Probe> {
  const name = 'spool';
  const file = join(spool, `${TEMP_MARK}check.${process.pid}.${randomBytes(4).toString('hex')}`);
  const mode = (m: number) => (m & 0o777).toString(8).padStart(4, '0');
  try {
    await ensureDir(spool);
    await writeFile(file, 'walvault check\n', { flag: 'wx', mode: 0o600 });
    await unlink(file);
    const st = await stat(spool);
    const own = await stat(repoSpool).catch(() => undefined);
    if (own && (own.mode & 0o077) !== 0) {
      return { name, status: 'warn', detail: `${repoSpool} (mode ${mode(own.mode)}) is open to other users: it holds prefetched WAL and upload records`, fix: `chmod 700 ${repoSpool}` };
    }
    const where = own ? `; this repository's part ${repoSpool} mode ${mode(own.mode)}` : '';
    return { name, status: 'ok', detail: `${spool} is writable and private (owner uid ${st.uid}, mode ${mode(st.mode)}${where})` };
  } catch (e) {
    await unlink(file).catch(() => undefined);
    return { name, status: 'fail', detail: `the spool ${spool} is not usable: ${describe(e)}`, fix: 'set spool (--spool, WALVAULT_SPOOL) to a directory this user owns' };
  }
}
