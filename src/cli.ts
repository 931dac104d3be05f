import yargs, { type Argv } from 'yargs';
import { loadConfig, type Config, type LoadedConfig } from './common/config.js';
import { describe as describeError, ExitCode, isWalvaultError, usageError, type WalvaultError } from './common/errors.js';
import { log, setLogCommand, setLogLevel } from './common/log.js';
import { SETTINGS } from './common/settings.js';
import { VERSION } from './version.js';
import { detectRecoveryMode, fetchErrorDecision } from './wal/recovery-mode.js';

type Handler = (loaded: LoadedConfig, args: Record<string, unknown>) => Promise<number>;

// Commands are imported lazily: `walvault wal-push` must not pay for parsing the backup code.
const COMMANDS: Array<{ usage: string; describe: string; handler: Handler; options?: (y: Argv) => Argv }> = [
  {
    usage: 'wal-push <path> [name]',
    describe: "archive one WAL file (archive_command = 'walvault wal-push %p %f')",
    handler: async ({ config }, a) => (await import('./commands/wal-push.js')).walPush(config, str(a['path']), opt(a['name'])),
  },
  {
    usage: 'wal-fetch <name> <path>',
    describe: "restore one WAL file (restore_command = 'walvault wal-fetch %f %p')",
    handler: async ({ config }, a) => (await import('./commands/wal-fetch.js')).walFetch(config, str(a['name']), str(a['path'])),
  },
  {
    usage: 'config',
    describe: 'print the effective configuration (secrets masked) and where each value comes from',
    options: (y) => y.option('json', { type: 'boolean', describe: 'print JSON' }),
    handler: async (loaded, a) => (await import('./commands/config.js')).printConfig(loaded, a['json'] === true),
  },
];

function str(v: unknown): string {
  return String(v);
}
function opt(v: unknown): string | undefined {
  return v === undefined || v === null ? undefined : String(v);
}

function buildParser(argv: string[], run: (h: Handler, args: Record<string, unknown>) => Promise<void>): Argv {
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
    y = y.command(cmd.usage, cmd.describe, cmd.options ?? ((b) => b), (args) => run(cmd.handler, args as Record<string, unknown>));
  }
  return y;
}

export async function main(argv: string[]): Promise<number> {
  const command = argv.find((a) => !a.startsWith('-')) ?? '';
  setLogCommand(command || 'cli');
  let config: Config | undefined;
  let result = 0;
  try {
    let ran = false;
    await buildParser(argv, async (handler, args) => {
      ran = true;
      const loaded = loadConfig(args);
      config = loaded.config;
      setLogLevel(config.logLevel);
      result = await handler(loaded, args);
    }).parseAsync();
    if (!ran) return 0; // --help / --version printed
    return result;
  } catch (e) {
    return reportFailure(command, e, config);
  }
}

function reportFailure(command: string, e: unknown, config: Config | undefined): number {
  const err: WalvaultError | undefined = isWalvaultError(e) ? e : undefined;
  const name = err?.code ?? 'InternalError';
  const code = err?.exitCode ?? ExitCode.internal;
  const message = `${name}: ${describeError(e)}`;
  if (!err) log.debug(`stack: ${(e as Error)?.stack ?? ''}`);
  if (command === 'wal-fetch') {
    // Whatever went wrong, "not found" (1) must not be implied in archive recovery: see recovery-mode.ts.
    const fallback = { fetchErrorPolicy: 'auto', fetchStopExitCode: 255 } as Config;
    const decision = fetchErrorDecision(config ?? fallback, detectRecoveryMode());
    log.error(`${message}; ${decision.reason}`);
    return decision.exitCode;
  }
  log.error(message);
  return code;
}
