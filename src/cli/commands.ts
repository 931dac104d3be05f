import type { Argv } from 'yargs';
import type { LoadedConfig } from '../common/config.js';

// The command table: usage, help text, options and a lazily imported handler for each command.
export type Handler = (loaded: LoadedConfig, args: Record<string, unknown>) => Promise<number>;

// Commands are imported lazily: `walvault wal-push` must not pay for parsing the backup code.
export const COMMANDS: Array<{
  usage: string;
  describe: string;
  handler: Handler;
  options?: (y: Argv) => Argv;
  /** Called when the configuration does not load, before the error is reported. */
  configFailed?: (e: unknown, args: Record<string, unknown>) => Promise<void>;
}> = [
  {
    usage: 'wal-push <path> [name]',
    describe: "archive one WAL file (archive_command = 'walvault wal-push %p %f')",
    handler: async ({ config }, a) => (await import('../commands/wal-push.js')).walPush(config, str(a['path']), opt(a['name'])),
  },
  {
    usage: 'wal-fetch <name> <path>',
    describe: "restore one WAL file (restore_command = 'walvault wal-fetch %f %p')",
    handler: async ({ config }, a) => (await import('../commands/wal-fetch.js')).walFetch(config, str(a['name']), str(a['path'])),
  },
  {
    usage: 'config',
    describe: 'print the effective configuration (secrets masked) and where each value comes from',
    options: (y) => y.option('json', { type: 'boolean', describe: 'print JSON' }),
    handler: async (loaded, a) => (await import('../commands/config.js')).printConfig(loaded, a['json'] === true),
  },
  {
    usage: 'backup-push',
    describe: 'take a base backup and upload it to the repository (libpq settings: --dbname, PGHOST, PGPORT, PGUSER...)',
    options: (y) =>
      y
        .option('method', {
          type: 'string',
          choices: ['stream', 'files'],
          describe: 'files: walvault reads the data directory itself with --jobs workers (format 2; on the database host); stream: pg_basebackup streams one tar (format 1). Default: files when the server\'s data directory (same system identifier) is readable here, else stream',
        })
        .option('dbname', { alias: 'd', type: 'string', describe: 'connection string (else PGHOST, PGPORT, PGUSER, PGPASSWORD...)' })
        .option('checkpoint', { type: 'string', choices: ['fast', 'spread'], default: 'fast', describe: 'checkpoint mode at the start of the backup' })
        .option('max-rate', { type: 'string', describe: 'limit the transfer rate from the server (pg_basebackup --max-rate, e.g. 50M)' })
        .option('incremental', {
          type: 'boolean',
          describe: 'store only the blocks changed since the newest backup of this system and timeline history (--method files; a full backup when there is none)',
        }),
    handler: async ({ config }, a) =>
      (await import('../commands/backup-push.js')).backupPush(config, {
        ...(a['dbname'] !== undefined ? { dbname: String(a['dbname']) } : {}),
        ...(a['max-rate'] !== undefined ? { maxRate: String(a['max-rate']) } : {}),
        checkpoint: a['checkpoint'] === 'spread' ? 'spread' : 'fast',
        ...(a['method'] !== undefined ? { method: a['method'] === 'files' ? 'files' : 'stream' } : {}),
        ...(a['incremental'] === true ? { incremental: true } : {}),
      }),
  },
  {
    usage: 'backup-list',
    describe: 'list complete base backups, oldest first',
    options: (y) => y.option('json', { type: 'boolean', describe: 'print one JSON array' }),
    handler: async ({ config }, a) => (await import('../commands/backup-list.js')).backupList(config, a['json'] === true),
  },
  {
    usage: 'backup-fetch <backup> [pgdata]',
    describe: 'restore a base backup (an id or LATEST) into an empty directory and set up recovery (PITR with --target-*)',
    options: (y) =>
      targetOptions(y)
        .option('target-action', { type: 'string', choices: ['pause', 'promote', 'shutdown'], describe: 'what the server does at the target (PostgreSQL default: pause)' })
        .option('standby', { type: 'boolean', describe: 'create standby.signal instead of recovery.signal' })
        .option('owner', { type: 'string', describe: 'when run as root: owner of the restored files (user name or uid[:gid])' })
        .option('restore-command', { type: 'string', describe: 'restore_command to write instead of this walvault' })
        .option('tablespace-map', { type: 'string', array: true, describe: 'OID=DIR: restore tablespace OID into DIR (repeatable; default: its original location, which must be new or empty)' })
        .option('delta', { type: 'boolean', describe: 'restore over an existing, stopped data directory of the same system: keep the files that match, fetch only the objects of the others' })
        .option('dry-run', { type: 'boolean', describe: 'print the PITR plan (backup and chain, WAL range and whether it is all archived, bytes to download, estimated time) and write nothing; <pgdata> is optional and never touched' })
        .option('json', { type: 'boolean', describe: 'with --dry-run: print the plan as one JSON document' }),
    handler: async (loaded, a) =>
      (await import('../commands/backup-fetch.js')).backupFetch(loaded, {
        which: str(a['backup']),
        ...(a['pgdata'] !== undefined ? { pgdata: str(a['pgdata']) } : {}),
        ...(a['dry-run'] === true ? { dryRun: true } : {}),
        ...(a['json'] === true ? { json: true } : {}),
        ...targetArgs(a),
        ...(a['target-action'] !== undefined ? { targetAction: str(a['target-action']) } : {}),
        ...(a['standby'] === true ? { standby: true } : {}),
        ...(a['owner'] !== undefined ? { owner: str(a['owner']) } : {}),
        ...(a['delta'] === true ? { delta: true } : {}),
        ...(a['restore-command'] !== undefined ? { restoreCommand: str(a['restore-command']) } : {}),
        ...(a['tablespace-map'] !== undefined ? { tablespaceMap: (a['tablespace-map'] as unknown[]).map(str) } : {}),
      }),
  },
  {
    usage: 'check',
    describe: 'check the configuration, the store (credentials, TLS, bucket, write/read/delete, 404s, If-None-Match, clock) and with --pg that PostgreSQL archives into it',
    options: (y) =>
      y
        .option('pg', { type: 'boolean', describe: 'also check the server: archive_mode, archive_command, system identifier, and a pg_switch_wal() arriving in the repository' })
        .option('dbname', { alias: 'd', type: 'string', describe: 'connection string for --pg (else PGHOST, PGPORT, PGUSER, PGPASSWORD...)' })
        .option('json', { type: 'boolean', describe: 'print one JSON document' }),
    configFailed: async (e, a) => (await import('../commands/check.js')).printConfigFailure(e, a['json'] === true),
    handler: async (loaded, a) =>
      (await import('../commands/check.js')).check(loaded, {
        pg: a['pg'] === true,
        json: a['json'] === true,
        ...(a['dbname'] !== undefined ? { dbname: String(a['dbname']) } : {}),
      }),
  },
  {
    usage: 'delete',
    describe: 'retention: delete the backups, WAL and left-over uploads that --retain-full N / --retain-days D (settings retainFull, retainDays) do not keep; a dry run unless --confirm',
    options: (y) =>
      y
        .option('confirm', { type: 'boolean', describe: 'really delete (without it: print what would go and why)' })
        .option('json', { type: 'boolean', describe: 'print the plan (and the result) as one JSON document' }),
    handler: async ({ config }, a) => (await import('../commands/delete.js')).deleteCommand(config, { confirm: a['confirm'] === true, json: a['json'] === true }),
  },
  {
    usage: 'verify',
    describe: 'check that the repository is whole: WAL continuity per timeline, every backup\'s WAL and objects (--deep: read and hash everything); exit 15 naming each problem',
    options: (y) =>
      y
        .option('deep', { type: 'boolean', describe: 'read every object back and check its SHA-256 (and WAL page headers); objects verified before and unchanged are skipped' })
        .option('full', { type: 'boolean', describe: 'with --deep: re-read every object, also those verified before' })
        .option('json', { type: 'boolean', describe: 'print one JSON document' }),
    handler: async (loaded, a) => (await import('../commands/verify.js')).verify(loaded, { deep: a['deep'] === true, full: a['full'] === true, json: a['json'] === true }),
  },
  {
    usage: 'info',
    describe: 'the recovery window per timeline, gaps, backups, archive lag (with a connection); a picture on a terminal; --prometheus FILE writes metrics',
    options: (y) =>
      y
        .option('json', { type: 'boolean', describe: 'print one JSON document' })
        .option('prometheus', { type: 'string', describe: 'write node_exporter textfile-collector metrics to FILE (atomically)' })
        .option('picture', { type: 'boolean', describe: 'draw the recovery window also when stdout is not a terminal' })
        .option('dbname', { alias: 'd', type: 'string', describe: 'connection string for archive lag and failures (else PGHOST, PGPORT... when set)' }),
    handler: async (loaded, a) =>
      (await import('../commands/info.js')).info(loaded, {
        json: a['json'] === true,
        picture: a['picture'] === true,
        ...(a['prometheus'] !== undefined ? { prometheus: str(a['prometheus']) } : {}),
        ...(a['dbname'] !== undefined ? { dbname: str(a['dbname']) } : {}),
      }),
  },
  {
    usage: 'restore-test',
    describe: 'the restore drill: restore LATEST (or the backup a --target-* needs) into a scratch directory, start PostgreSQL there on a loopback port with archiving off, wait until recovery ends and it promotes, run pg_amcheck and --sql, remove everything; reports the time of each phase (RTO)',
    options: (y) =>
      targetOptions(y)
        .option('backup', { type: 'string', describe: 'the backup to restore (an id; default LATEST, or the newest one the target needs)' })
        .option('sql', { type: 'string', describe: 'run this SQL file on the recovered server (in --database); any error fails the drill' })
        .option('database', { type: 'string', default: 'postgres', describe: 'the database --sql runs in' })
        .option('dir', { type: 'string', describe: 'where the scratch directory is made (default: the system temp directory)' })
        .option('owner', { type: 'string', describe: 'when run as root: the user the restored files and the server belong to (default postgres)' })
        .option('timeout', { type: 'number', default: 3600, describe: 'seconds allowed for recovery to end (and for each check)' })
        .option('keep-failed', { type: 'boolean', describe: 'keep the scratch directory (server stopped) when the drill fails' })
        .option('json', { type: 'boolean', describe: 'print one JSON document' }),
    handler: async (loaded, a) =>
      (await import('../commands/restore-test.js')).restoreTest(
        loaded,
        {
          ...targetArgs(a),
          ...(a['backup'] !== undefined ? { backup: str(a['backup']) } : {}),
          ...(a['sql'] !== undefined ? { sql: str(a['sql']) } : {}),
          ...(a['database'] !== undefined ? { database: str(a['database']) } : {}),
          ...(a['dir'] !== undefined ? { dir: str(a['dir']) } : {}),
          ...(a['owner'] !== undefined ? { owner: str(a['owner']) } : {}),
          ...(a['keep-failed'] === true ? { keepFailed: true } : {}),
          timeout: Number(a['timeout']),
        },
        a['json'] === true,
      ),
  },
];

/** The recovery target flags backup-fetch and restore-test share (backup-fetch adds --target-action). */
function targetOptions(y: Argv): Argv {
  return y
    .option('target-time', { type: 'string', describe: 'recover to this timestamp (e.g. "2026-11-24 13:59:00+01"; no zone = local time)' })
    .option('target-lsn', { type: 'string', describe: 'recover to this WAL location (X/Y)' })
    .option('target-xid', { type: 'string', describe: 'recover to the commit of this transaction id' })
    .option('target-name', { type: 'string', describe: 'recover to this restore point (pg_create_restore_point)' })
    .option('target-immediate', { type: 'boolean', describe: 'recover only until the backup is consistent' })
    .option('target-timeline', { type: 'string', describe: 'latest (PostgreSQL default), current or a timeline number' });
}

function targetArgs(a: Record<string, unknown>) {
  return {
    ...(a['target-time'] !== undefined ? { targetTime: str(a['target-time']) } : {}),
    ...(a['target-lsn'] !== undefined ? { targetLsn: str(a['target-lsn']) } : {}),
    ...(a['target-xid'] !== undefined ? { targetXid: str(a['target-xid']) } : {}),
    ...(a['target-name'] !== undefined ? { targetName: str(a['target-name']) } : {}),
    ...(a['target-immediate'] === true ? { targetImmediate: true as const } : {}),
    ...(a['target-timeline'] !== undefined ? { targetTimeline: str(a['target-timeline']) } : {}),
  };
}

function str(v: unknown): string {
  return String(v);
}
function opt(v: unknown): string | undefined {
  return v === undefined || v === null ? undefined : String(v);
}

