import type { LoadedConfig } from '../common/config.js';
import { describe } from '../common/errors.js';
import { checkOutcome, formatJson, formatText, type Probe } from '../operate/check-report.js';
import { runCheck } from '../operate/check.js';

// walvault check [--pg] [--json]: one line per probe on stdout (or one JSON document); exit 15
// (CheckFailed) when a probe failed, 4 (ConfigError) when the configuration cannot be used at all.
export async function check(loaded: LoadedConfig, opts: { pg: boolean; json: boolean; dbname?: string }): Promise<number> {
  const started = new Date();
  const { repo, probes } = await runCheck(loaded, { pg: opts.pg, ...(opts.dbname !== undefined ? { dbname: opts.dbname } : {}) });
  process.stdout.write(opts.json ? formatJson(repo, probes, started) : formatText(probes));
  const failure = checkOutcome(probes);
  if (failure) throw failure;
  return 0;
}

/** A configuration that does not load is the first (and only) probe: the caller then reports the error itself. */
export async function printConfigFailure(e: unknown, json: boolean): Promise<void> {
  const probes: Probe[] = [{ name: 'configuration', status: 'fail', detail: describe(e), fix: 'fix the configuration named (walvault config shows every value and where it comes from)' }];
  process.stdout.write(json ? formatJson(undefined, probes, new Date()) : formatText(probes));
}
