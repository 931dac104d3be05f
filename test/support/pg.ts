// Throwaway PostgreSQL 15 clusters for integration tests. initdb and postgres refuse to run as
// root, so when the tests run as root every server-side command runs as the `postgres` OS user in
// directories it owns; otherwise everything runs as the current user.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { appendFile, chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { freePort } from '../../src/common/free-port.js';

export { freePort };

export const PG_BIN_DIR = '/usr/lib/postgresql/15/bin';
export const isRoot = process.getuid?.() === 0;
const POSTGRES_HOME = '/var/lib/postgresql';

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  cwd?: string;
  /** Added to a minimal environment (PATH, HOME); nothing else is inherited. */
  env?: Record<string, string>;
  input?: string;
  timeoutMs?: number;
}

/** Runs a command with a minimal environment (PATH, HOME, opts.env) in its own process group. */
export function runCommand(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, {
      // '/' because the test's cwd (the repo, under /work or /root) may be unreadable for postgres,
      // and initdb/pg_ctl fail when they cannot stat their working directory.
      cwd: opts.cwd ?? '/',
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: isRoot ? POSTGRES_HOME : (process.env.HOME ?? '/tmp'), ...opts.env },
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      detached: true, // own process group, so a timeout also kills what runuser started
    });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    if (child.stdin) {
      child.stdin.on('error', () => {}); // EPIPE when the command exits without reading its input
      child.stdin.end(opts.input);
    }
    const timer = setTimeout(() => {
      stderr += `\n[pg.ts] ${cmd} timed out after ${opts.timeoutMs} ms`;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {}
    }, opts.timeoutMs ?? 300_000);
    child.on('error', (err) => (stderr += `\n[pg.ts] ${cmd}: ${err.message}`));
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Runs a command as the postgres OS user when we are root (runuser keeps the environment given). */
export function runAsPostgres(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return isRoot ? runCommand('runuser', ['-u', 'postgres', '--', cmd, ...args], opts) : runCommand(cmd, args, opts);
}

/** Gives `path` (recursively) to the postgres user when we are root; nothing to do otherwise. */
export async function chownToPostgres(path: string): Promise<void> {
  if (!isRoot) return;
  const r = await runCommand('chown', ['-R', 'postgres:postgres', path]);
  if (r.code !== 0) throw new Error(`chown -R postgres ${path} failed: ${r.stderr}`);
}


function confValue(v: string | number): string {
  return typeof v === 'number' ? String(v) : `'${v.replace(/'/g, "''")}'`;
}

function check(r: RunResult, what: string): RunResult {
  if (r.code !== 0) throw new Error(`${what} failed (exit ${r.code}):\n${r.stderr || r.stdout}`);
  return r;
}

const tail = (s: string, lines = 30) => s.trimEnd().split('\n').slice(-lines).join('\n');

export interface CreateOptions {
  walSegSizeMb?: number;
  conf?: Record<string, string | number>;
  initdbArgs?: string[];
}

export interface StartOptions {
  /** Wait until the server accepts connections (pg_ctl -w). Default true. */
  wait?: boolean;
  timeoutSec?: number;
  /** Environment of the postmaster, inherited by archive_command and restore_command. */
  env?: Record<string, string>;
}

export class PgCluster {
  readonly binDir = PG_BIN_DIR;
  readonly host = '127.0.0.1';
  /** Chosen at the first start() and kept across restarts. */
  port = 0;
  /** Holds the unix socket and the server log; owned by postgres. */
  readonly socketDir: string;
  readonly logFile: string;
  private env: Record<string, string> = {};

  private constructor(
    readonly dataDir: string,
    private readonly ownDirs: string[],
    socketDir: string,
  ) {
    this.socketDir = socketDir;
    this.logFile = join(socketDir, 'postgres.log');
  }

  static async create(opts: CreateOptions = {}): Promise<PgCluster> {
    if (!existsSync(join(PG_BIN_DIR, 'initdb'))) {
      throw new Error(`${PG_BIN_DIR}/initdb not found: install PostgreSQL 15 (apt-get install postgresql-15)`);
    }
    const base = await mkdtemp('/tmp/walvault-pg-');
    await chmod(base, 0o700);
    await chownToPostgres(base);
    const cluster = new PgCluster(join(base, 'data'), [base], base);
    const args = ['-D', cluster.dataDir, '--auth=trust', '-U', 'postgres', '-E', 'UTF8', '--locale=C'];
    // --no-sync only skips initdb's final fsync of the new files; the server keeps fsync=on.
    args.push('--no-sync', '--no-instructions');
    if (opts.walSegSizeMb) args.push(`--wal-segsize=${opts.walSegSizeMb}`);
    args.push(...(opts.initdbArgs ?? []));
    check(await runAsPostgres(join(PG_BIN_DIR, 'initdb'), args, { timeoutMs: 120_000 }), 'initdb');
    await cluster.appendConf({
      logging_collector: 'off',
      log_line_prefix: '%m [%p] %b ',
      // Lean for a 2-core CI box running several clusters at once.
      shared_buffers: '32MB',
      max_connections: 30,
      // Commits need not wait for the WAL flush; fsync itself stays on (durability tests need it).
      synchronous_commit: 'off',
      ...opts.conf,
    });
    return cluster;
  }

  /**
   * A cluster around a data directory produced elsewhere (backup-fetch, a copy). Ownership and
   * mode are fixed, since PostgreSQL refuses a data directory it does not own or with group/world
   * access. Its listen/port/socket settings are overridden at start, so a copied postgresql.conf
   * pointing at another cluster's socket directory does no harm.
   */
  static async fromDataDir(dataDir: string): Promise<PgCluster> {
    await chownToPostgres(dataDir);
    await chmod(dataDir, 0o700);
    const aux = await mkdtemp('/tmp/walvault-pg-');
    await chmod(aux, 0o700);
    await chownToPostgres(aux);
    const cluster = new PgCluster(dataDir, [aux, dataDir], aux);
    const r = await runAsPostgres('test', ['-r', join(dataDir, 'PG_VERSION')]);
    if (r.code !== 0) {
      throw new Error(
        `${dataDir}/PG_VERSION is not readable by the postgres user: is it a data directory, and can postgres ` +
          `traverse ${dirname(dataDir)}? (use tempDir(prefix, { forPostgres: true }) from test/support/walvault.ts)`,
      );
    }
    return cluster;
  }

  /** Appends settings to postgresql.conf (later lines win; postgresql.auto.conf still overrides). */
  async appendConf(settings: Record<string, string | number>): Promise<void> {
    const lines = Object.entries(settings).map(([k, v]) => `${k} = ${confValue(v)}\n`);
    await appendFile(join(this.dataDir, 'postgresql.conf'), lines.join(''));
  }

  /** Environment for libpq clients (psql, pgbench, pg_basebackup, walvault backup-push). */
  connectionEnv(): Record<string, string> {
    return { PGHOST: this.host, PGPORT: String(this.port), PGUSER: 'postgres', PGDATABASE: 'postgres' };
  }

  async start(opts: StartOptions = {}): Promise<void> {
    if (opts.env) this.env = opts.env;
    if (!this.port) this.port = await freePort();
    // Command-line -c settings beat both postgresql.conf and postgresql.auto.conf.
    const o = [
      `-c port=${this.port}`,
      `-c listen_addresses=${this.host}`,
      `-c unix_socket_directories='${this.socketDir}'`,
      '-c logging_collector=off',
    ].join(' ');
    const args = ['start', '-D', this.dataDir, '-l', this.logFile, '-o', o, opts.wait === false ? '-W' : '-w'];
    args.push('-t', String(opts.timeoutSec ?? 120));
    const r = await runAsPostgres(join(PG_BIN_DIR, 'pg_ctl'), args, { env: this.env, timeoutMs: 600_000 });
    if (r.code !== 0) {
      throw new Error(`pg_ctl start failed (exit ${r.code}):\n${r.stderr || r.stdout}\n--- ${this.logFile}:\n${tail(await this.readLog())}`);
    }
  }

  async isRunning(): Promise<boolean> {
    const r = await runAsPostgres(join(PG_BIN_DIR, 'pg_ctl'), ['status', '-D', this.dataDir]);
    return r.code === 0;
  }

  /** pg_ctl stop; a no-op when the server is not running. The default 60 s is pg_ctl's own. */
  async stop(mode: 'smart' | 'fast' | 'immediate' = 'fast', timeoutSec = 60): Promise<void> {
    if (!(await this.isRunning())) return;
    const args = ['stop', '-D', this.dataDir, '-m', mode, '-w', '-t', String(timeoutSec)];
    check(await runAsPostgres(join(PG_BIN_DIR, 'pg_ctl'), args, { timeoutMs: (timeoutSec + 30) * 1000 }), 'pg_ctl stop');
  }

  async reload(): Promise<void> {
    check(await runAsPostgres(join(PG_BIN_DIR, 'pg_ctl'), ['reload', '-D', this.dataDir]), 'pg_ctl reload');
  }

  /** psql -At: rows on lines, columns separated by '|'; throws with psql's stderr on any error. */
  async query(sql: string): Promise<string> {
    const args = ['-At', '-X', '-v', 'ON_ERROR_STOP=1', '-c', sql];
    const r = await runCommand(join(PG_BIN_DIR, 'psql'), args, { env: this.connectionEnv(), timeoutMs: 120_000 });
    return check(r, `psql -c ${JSON.stringify(sql.slice(0, 200))}`).stdout.trim();
  }

  /** pgbench against the postgres database; throws on a non-zero exit. */
  async pgbench(args: string[], timeoutMs = 300_000): Promise<RunResult> {
    return check(await runCommand(join(PG_BIN_DIR, 'pgbench'), args, { env: this.connectionEnv(), timeoutMs }), `pgbench ${args.join(' ')}`);
  }

  async readLog(): Promise<string> {
    return readFile(this.logFile, 'utf8').catch(() => '');
  }

  /** Polls `sql` until `predicate` accepts its output; query errors (still starting up) just retry. */
  async waitFor(sql: string, predicate: (out: string) => boolean, timeoutMs = 30_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    for (;;) {
      try {
        const out = await this.query(sql);
        if (predicate(out)) return out;
        last = `last result: ${JSON.stringify(out)}`;
      } catch (err) {
        last = `last error: ${(err as Error).message}`;
      }
      if (Date.now() > deadline) throw new Error(`waitFor(${JSON.stringify(sql)}) timed out after ${timeoutMs} ms; ${last}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /** Stops the server if it runs (immediate: nothing left to protect) and deletes its directories. */
  async destroy(): Promise<void> {
    try {
      await this.stop('immediate');
    } catch {
      // still remove the files; a server left running would report in the test log
    }
    for (const d of this.ownDirs) await rm(d, { recursive: true, force: true });
  }
}

/**
 * Starts a data directory backup-fetch restored with recovery to promote: archiving off (a restore
 * must not fork timelines into the shared archive), registered in `restored` for the test's
 * cleanup, and waits until recovery has ended.
 */
export async function startRestoredCluster(dataDir: string, restored: PgCluster[]): Promise<PgCluster> {
  const c = await PgCluster.fromDataDir(dataDir);
  restored.push(c);
  await c.appendConf({ archive_mode: 'off' });
  await c.start({ env: { AWS_EC2_METADATA_DISABLED: 'true' } });
  await c.waitFor('SELECT pg_is_in_recovery()', (out) => out === 'f', 60_000);
  return c;
}
