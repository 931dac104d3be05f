import type { Config } from '../common/config.js';
import { usageError } from '../common/errors.js';
import { escapeControl } from '../common/control-chars.js';
import { log } from '../common/log.js';
import { openRepository } from '../archive/repository.js';
import { runDelete } from '../operate/delete-run.js';
import { renderJson, renderText } from '../operate/delete-report.js';

// walvault delete [--retain-full N] [--retain-days D] [--confirm] [--json]: retention. A dry run
// unless --confirm; the rules come from the flags or the retainFull/retainDays settings, and without
// one the command refuses rather than guess.
export async function deleteCommand(config: Config, opts: { confirm: boolean; json: boolean }): Promise<number> {
  if (config.retainFull === undefined && config.retainDays === undefined) {
    throw usageError(
      'delete needs a retention rule: set retainFull (--retain-full N: keep the N newest full backups) and/or ' +
        'retainDays (--retain-days D: keep every backup of the last D days) in the config file, the environment or on the command line',
    );
  }
  const storage = await openRepository(config);
  try {
    const rules = {
      ...(config.retainFull !== undefined ? { retainFull: config.retainFull } : {}),
      ...(config.retainDays !== undefined ? { retainDays: config.retainDays } : {}),
      now: new Date(),
      staleUploadAge: config.backupStaleUploadAge,
    };
    const outcome = await runDelete(storage, config, rules, opts.confirm);
    process.stdout.write(opts.json ? renderJson(outcome, storage.url) : renderText(outcome, storage.url));
    // Each refused key is on stderr already; the exit code is the first refusal's.
    const first = outcome.failures[0];
    if (!first) return 0;
    log.error(escapeControl(`delete did not finish: ${outcome.failures.length} key${outcome.failures.length === 1 ? '' : 's'} could not be deleted (the first: ${first.key}: ${first.error.message}); the repository is consistent, run delete --confirm again once that is fixed`));
    return first.error.exitCode;
  } finally {
    storage.close();
  }
}
