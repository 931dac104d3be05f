import yargs, { type Argv } from 'yargs';
import { loadConfig, type Config } from '../common/config.js';
import { configError, usageError } from '../common/errors.js';
import { setLogCommand, setLogLevel } from '../common/log.js';
import { SETTINGS } from '../common/settings.js';
import { VERSION } from '../common/version.js';
import { COMMANDS } from './commands.js';
import { reportFailure } from './report-failure.js';

type Command = (typeof COMMANDS)[number];

function buildParser(argv: string[], run: (c: Command, args: Record<string, unknown>) => Promise<void>): Argv {
  let y = yargs(argv)
    .scriptName('walvault')
    .usage('walvault <command> [options]\n\nPostgreSQL WAL archiving to S3 or a directory, with checksums, retries and no overwrites.')
    .version(VERSION)
    .strict()
    .help('help')
    .alias('h', 'help')
    .wrap(Math.min(110, process.stdout.columns || 100))
    .option('config', { type: 'string', describe: 'JSON config file (also WALVAULT_CONFIG)', global: true, group: 'Configuration:' })
    .demandCommand(1, 'a command is required')
    .exitProcess(false)
    .fail((msg, err) => {
      throw err ?? usageError(msg);
    });
  for (const def of SETTINGS) {
    const envNote = def.env.length ? ` [env ${def.env.join(', ')}]` : '';
    const group = def.key.startsWith('s3') ? 'S3 options:' : 'Options:';
    y = y.option(def.flag, {
      type: def.type === 'boolean' ? 'boolean' : 'string',
      describe: `${def.describe}${def.default !== undefined ? ` (default ${def.default})` : ''}${envNote}`,
      global: true,
      group,
      ...(def.choices ? { choices: def.choices } : {}),
    });
  }
  for (const cmd of COMMANDS) {
    y = y.command(cmd.usage, cmd.describe, cmd.options ?? ((b) => b), (args) => run(cmd, args as Record<string, unknown>));
  }
  return y;
}

export async function main(argv: string[]): Promise<number> {
  // Global flags may come first (`walvault --config /etc/walvault.json wal-fetch %f %p`, as the
  // README shows): the command is the first known command name, not the first non-flag word, or a
  // wal-fetch error would miss the recovery-mode policy below and exit 2-125 ("not found").
  const names = COMMANDS.map((c) => c.usage.split(' ')[0]!);
  const command = argv.find((a) => names.includes(a)) ?? argv.find((a) => !a.startsWith('-')) ?? '';
  setLogCommand(command || 'cli');
  let config: Config | undefined;
  let result = 0;
  try {
    refuseLooseBooleans(argv);
    let ran = false;
    await buildParser(argv, async (cmd, args) => {
      ran = true;
      let loaded;
      try {
        loaded = loadConfig(args);
      } catch (e) {
        // `check` reports an unloadable configuration as its first probe (then the error's own exit code).
        if (cmd.configFailed) await cmd.configFailed(e, args);
        throw e;
      }
      config = loaded.config;
      setLogLevel(config.logLevel);
      result = await cmd.handler(loaded, args);
    }).parseAsync();
    if (!ran) return 0; // --help / --version printed
    return result;
  } catch (e) {
    return reportFailure(command, e, config);
  }
}

/**
 * yargs reads `--s3-force-path-style=yes` (or =maybe) as false without a word. A boolean flag takes
 * true or false, as in the fast path (src/cli/hot-path.ts), which leaves anything else to here.
 */
function refuseLooseBooleans(argv: string[]): void {
  for (const tok of argv) {
    if (tok === '--') return;
    const m = /^--(?:no-)?([^=]+)=(.*)$/s.exec(tok);
    const def = m && SETTINGS.find((s) => s.type === 'boolean' && (s.flag === m[1] || s.key === m[1]));
    if (def && !/^(true|false)$/.test(m[2]!)) {
      throw configError(`${def.key} (from --${def.flag}): expected true or false, got ${JSON.stringify(m[2]!.slice(0, 40))}`);
    }
  }
}
