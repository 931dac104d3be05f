import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../common/config.js';
import { describe as describeError, ExitCode, isWalvaultError, type ErrorName } from '../common/errors.js';
import { log } from '../common/log.js';
import { fetchErrorDecision, type RecoveryMode } from '../wal/recovery-mode.js';

/**
 * The one way a command's failure reaches the user, for the full CLI and the hot path alike: one
 * error line naming the error, and its exit code. For wal-fetch the code comes from the recovery
 * policy: whatever went wrong, "not found" (1) must not be implied in archive recovery.
 */
export function reportFailure(command: string, e: unknown, config: Config | undefined): number {
  const err = isWalvaultError(e) ? e : undefined;
  const name: ErrorName = err?.code ?? 'InternalError'; // anything not a WalvaultError is a bug
  const message = `${name}: ${describeError(e)}`;
  if (!err) log.debug(`stack: ${(e as Error)?.stack ?? ''}`);
  if (command === 'wal-fetch') {
    const fallback = { fetchErrorPolicy: 'auto', fetchStopExitCode: 255 } as Config;
    const decision = fetchErrorDecision(config ?? fallback, detectRecoveryMode());
    log.error(`${message}; ${decision.reason}`);
    return decision.exitCode;
  }
  log.error(message);
  return err?.exitCode ?? ExitCode.internal;
}

/** restore_command runs with PGDATA as its working directory. */
export function detectRecoveryMode(dataDir = process.cwd()): RecoveryMode {
  // standby.signal wins when both exist, as in PostgreSQL itself.
  if (existsSync(join(dataDir, 'standby.signal'))) return 'standby';
  if (existsSync(join(dataDir, 'recovery.signal'))) return 'recovery';
  return 'none';
}
