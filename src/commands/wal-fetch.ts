import { dirname, resolve } from 'node:path';
import { retryPolicy, type Config } from '../common/config.js';
import { cleanupStaleTemps } from '../fs/atomic.js';
import { elapsed, formatBytes, log } from '../common/log.js';
import { Deadline } from '../common/retry.js';
import { downloadVerified } from '../archive/fetch.js';
import { openRepository } from '../archive/repository.js';
import { checkMissIsNotAGap } from '../archive/gap-check.js';
import { nextSegment, parseWalName, walObjectKey } from '../wal/names.js';
import { tryFastFetch } from '../prefetch/fast-path.js';
import { prefetchContext } from '../prefetch/context.js';
import { afterSegmentServed } from '../prefetch/spool-dir.js';
import { ackTargetFrom } from '../prefetch/fetch-ack.js';

// restore_command = 'walvault wal-fetch %f %p'. Exit 0 only once the complete, verified file is at
// %p; exit 1 only when the repository authoritatively says the file does not exist. Every other
// outcome is an error, mapped to an exit code by the recovery-mode policy in the CLI.
export async function walFetch(
  config: Config,
  name: string,
  path: string,
  opts: { spoolChecked?: boolean; started?: bigint } = {},
): Promise<number> {
  const started = opts.started ?? process.hrtime.bigint();
  const wal = parseWalName(name);
  const target = resolve(path);
  // A walvault killed mid-fetch leaves only a temp file: remove it before PostgreSQL looks around.
  await cleanupStaleTemps(dirname(target));

  // Prefetched, or answered by the running prefetch worker: see src/prefetch/fast-path.ts.
  if (!opts.spoolChecked) {
    const answered = await tryFastFetch(config, name, path, started);
    if (answered !== null) return answered;
  }

  // The deadline covers the whole command, including any wait for the prefetch worker.
  const spentMs = Number(process.hrtime.bigint() - started) / 1e6;
  const deadline = new Deadline(Math.max(1000, config.deadline * 1000 - spentMs));
  const storage = await openRepository(config);
  try {
    const meta = await downloadVerified(storage, walObjectKey(wal), target, {
      policy: retryPolicy(config),
      deadline,
      what: `wal-fetch ${name}`,
    });
    if (!meta) {
      await checkMissIsNotAGap(storage, wal, { policy: retryPolicy(config), deadline });
      log.info(`${name} is not in ${storage.url} (not found); exiting 1`);
      return 1;
    }
    log.info(`fetched ${name} from ${storage.url} (${formatBytes(meta.size)}, ${meta.codec}, verified SHA-256, ${elapsed(started)})`);
    if (config.prefetch > 0 && wal.kind === 'segment') {
      const ctx = await prefetchContext(config, storage, deadline);
      const ack = ackTargetFrom(config);
      if (ctx) await afterSegmentServed(ctx, wal.name, nextSegment(wal.name, ctx.segSize), { config, ...ctx, ...(ack ? { ack } : {}) });
    }
    return 0;
  } finally {
    deadline.dispose();
    storage.close();
  }
}
