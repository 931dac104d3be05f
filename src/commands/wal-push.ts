import { basename, dirname } from 'node:path';
import { retryPolicy, type Config } from '../common/config.js';
import { elapsed, formatBytes, log } from '../common/log.js';
import { Deadline } from '../common/retry.js';
import { dropIfOverLimit, flushGapMarkers } from '../archive/backlog.js';
import { repoCacheDir } from '../archive/cache-dir.js';
import { advanceHighWater } from '../archive/high-water.js';
import { openRepository } from '../archive/repository.js';
import { planBatch, pushBatch } from '../push-ahead/batch.js';
import { askPusher } from '../push-ahead/client.js';
import { logFastPathHit, tryFastPush } from '../push-ahead/fast-path.js';
import { contiguousEnd, listReady } from '../push-ahead/plan.js';
import { pruneRecords } from '../push-ahead/records.js';
import { pruneWrapperAcks } from '../push-ahead/wrapper-acks.js';
import { wrapperAcksOf } from '../worker/wrapper-acks.js';
import { repoKeyOf, storageUrlOf } from '../storage/open.js';
import { parseWalName } from '../wal/names.js';

// archive_command = 'walvault wal-push %p %f'. Exit 0 if and only if the file is durably in the
// repository with the same bytes; a false 0 makes PostgreSQL recycle WAL that exists nowhere else.
//
// Speed (README "Speed"): a file uploaded ahead is answered from its spool record when its identity
// is unchanged or it re-hashes the same (fast path, src/push-ahead/fast-path.ts); otherwise a running look-ahead worker is asked for it; and
// otherwise it is pushed here, together with up to `lookahead` other ready files (look-ahead), after
// which a worker takes over the rest of the backlog.

export async function walPush(config: Config, path: string, nameArg?: string, opts: { fastPathChecked?: boolean } = {}): Promise<number> {
  const started = process.hrtime.bigint();
  const name = nameArg ?? basename(path);
  const wal = parseWalName(name);
  // Uploaded earlier by a look-ahead and verified again now (identity, or size + SHA-256): nothing to send. This
  // comes before the backlog check: a file that is in the archive is never reported as dropped.
  if (!opts.fastPathChecked) {
    const hit = await tryFastPush(config, path, name);
    if (hit) {
      logFastPathHit(config, name, hit, started);
      return 0;
    }
  }
  const repoUrl = storageUrlOf(config.repo);
  const repoKey = repoKeyOf(config) ?? repoUrl;
  if (config.maxReadyBytes !== undefined && (wal.kind === 'segment' || wal.kind === 'partial')) {
    if (await dropIfOverLimit(path, name, config.maxReadyBytes, { spool: config.spool, repoKey })) return 0;
  }

  const walDir = dirname(path);
  const repoCache = repoCacheDir(config.spool, repoKey);
  // The look-ahead worker of this pg_wal may have it in hand already: no need to load the SDK here.
  if (config.lookahead > 0) {
    const waitMs = Math.min(config.attemptTimeout, config.deadline / 2) * 1000;
    if ((await askPusher(config, repoCache, walDir, name, waitMs)) === 'recorded') {
      const hit = await tryFastPush(config, path, name);
      if (hit) {
        logFastPathHit(config, name, hit, started);
        return 0;
      }
    }
  }

  const wrapper = wrapperAcksOf(config);
  const plan = await planBatch(config, wal, walDir, repoCache, repoUrl, wrapper);

  const spentMs = Number(process.hrtime.bigint() - started) / 1e6;
  const deadline = new Deadline(Math.max(1000, config.deadline * 1000 - spentMs));
  // Reading and compressing start while the storage driver (the AWS SDK) is still loading.
  const opening = openRepository(config);
  opening.catch(() => undefined);
  try {
    const { foreground, archived, failed } = await pushBatch(opening, config, path, plan, { name, walDir, repoCache, repoUrl, deadline, wrapper });
    const { file, outcome, storedSize } = foreground;
    const storage = await opening;

    const ctx = { spool: config.spool, policy: retryPolicy(config), deadline, intervalMs: config.highWaterInterval * 1000 };
    // The mark may only claim an unbroken run: this segment and the look-ahead ones right after it.
    // This segment first, so that a timeline's very first mark starts here; the second call only
    // moves the local mark unless a remote write is due (advanceHighWater rate-limits those).
    if (wal.kind === 'segment' && file.header) {
      await advanceHighWater(storage, wal.timeline, wal.name, ctx);
      const end = contiguousEnd(wal.name, archived, file.header.segmentSize);
      if (end !== wal.name) await advanceHighWater(storage, wal.timeline, end, ctx);
    }
    await flushGapMarkers(storage, ctx);
    // Records of files PostgreSQL no longer lists as ready (archived since, or recycled) go.
    if (plan.ready.length > 0) {
      const ready = new Set(await listReady(walDir).catch(() => [] as string[]));
      await pruneRecords(repoCache, ready, archived).catch(() => undefined);
      if (wrapper) await pruneWrapperAcks(wrapper, ready, archived).catch(() => undefined);
    }

    const names = [...archived].sort();
    const ahead = names.length > 0 ? `; look-ahead uploaded ${names.length} more (${names.length > 1 ? `${names[0]}..${names.at(-1)}` : names[0]})` : '';
    const aheadFailed = failed.length > 0 ? `; ${failed.length} look-ahead uploads failed` : '';
    if (outcome === 'pushed') {
      log.info(
        `pushed ${name} to ${storage.url} (${formatBytes(file.size)}, ${file.codec} ${formatBytes(storedSize)}${ahead}${aheadFailed}, ${elapsed(started)})`,
      );
    } else {
      log.info(
        `${name} was already archived in ${storage.url} with identical content (SHA-256 ${file.sha256.slice(0, 16)}...); nothing to do${ahead}${aheadFailed}`,
      );
    }
    return 0;
  } finally {
    deadline.dispose();
    await opening.then((st) => st.close()).catch(() => undefined);
  }
}
