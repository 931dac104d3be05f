import { join } from 'node:path';
import type { Config } from '../common/config.js';
import { openStorage, repoKeyOf, storageUrlOf } from '../storage/open.js';
import type { Storage } from '../storage/types.js';
import { repoCacheDir } from './cache-dir.js';

/**
 * Opens the configured repository with its spool: the S3 driver keeps what it learned about the
 * endpoint (conditional writes) in the repository's spool directory, so the probe runs once, not
 * once per WAL file.
 */
export function openRepository(config: Config): Promise<Storage> {
  const cache = repoCacheDir(config.spool, repoKeyOf(config) ?? storageUrlOf(config.repo));
  return openStorage(config, { capabilityFile: join(cache, 's3-capabilities.json') });
}
