import { spawn } from 'node:child_process';
import type pg from 'pg';
import { checkFailedError, describe as describeError } from '../common/errors.js';
import { newClient } from '../backup/pg-connect.js';
import { ownerEnv } from '../backup/restore-worker.js';
import { sleep } from '../common/sleep.js';
import { logTail, type DrillDir, type DrillServer } from './drill-server.js';

// What restore-test does with the scratch server: waits until recovery has ended (the server then
// accepts connections: hot_standby is off), reads where replay ended, runs pg_amcheck and the
// operator's SQL. A failure is a DrillFailure: the reason restore-test names, and its message.

export type DrillReason =
  | 'restore failed'
  | 'missing WAL'
  | 'server did not start'
  | 'recovery failed'
  | 'timeout'
  | 'amcheck corruption'
  | 'SQL error'
  | 'interrupted';

export class DrillFailure extends Error {
  constructor(
    readonly reason: DrillReason,
    message: string,
  ) {
    super(message);
  }
}

export interface Recovered {
  replayLsn: string | null;
  replayTime: string | null;
  timeline: number;
  /** The role the checks connect as. */
  user: string;
}

export interface Conn {
  d: DrillDir;
  server: DrillServer;
  database: string;
}

function connect(c: Conn, user: string, database = c.database, timeoutMs = 5000): Promise<pg.Client> {
  const client = newClient({ host: c.d.dir, port: c.server.port, user, database, connectionTimeoutMillis: timeoutMs, application_name: 'walvault restore-test' });
  client.on('error', () => undefined);
  return client.connect().then(
    () => client,
    (e: unknown) => {
      void client.end().catch(() => undefined);
      throw e;
    },
  );
}

async function died(c: Conn, what: string): Promise<DrillFailure> {
  const st = await c.server.exited;
  const tail = await logTail(c.d);
  const text = tail.join('\n');
  const how = st.signal ? `killed by ${st.signal}` : `exit code ${st.code}`;
  // The pre-check proves the WAL range is archived; a segment lost since, or unreadable, shows here.
  const reason: DrillReason = /WAL ends before|could not (restore|find|locate)|requested WAL segment|invalid checkpoint|restore_command/i.test(text)
    ? 'missing WAL'
    : /ready to accept|redo starts|database system was interrupted/i.test(text) ? 'recovery failed' : 'server did not start';
  const seg = /could not restore file "([0-9A-F]{24})"/.exec(text)?.[1];
  const why = seg ? `: it could not restore WAL segment ${seg} from the archive` : '';
  return new DrillFailure(reason, `PostgreSQL stopped ${what} (${how})${why}; last lines of its log:\n${tail.map((l) => `  ${l}`).join('\n')}`);
}

/** Polls until the server accepts connections and is out of recovery; `users`: roles to try, in order. */
export async function waitRecovered(c: Conn, users: string[], timeoutMs: number, stop: AbortSignal): Promise<Recovered> {
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer yet';
  let i = 0;
  for (;;) {
    if (stop.aborted) throw new DrillFailure('interrupted', `interrupted by ${String(stop.reason)} while recovery was running`);
    if (!c.server.running()) throw await died(c, 'before recovery ended');
    if (Date.now() > deadline) {
      const tail = await logTail(c.d, 6);
      throw new DrillFailure('timeout', `recovery did not end within ${timeoutMs / 1000} s (--timeout; ${last}); last lines of the log:\n${tail.map((l) => `  ${l}`).join('\n')}`);
    }
    let client: pg.Client | undefined;
    try {
      client = await connect(c, users[i]!, 'template1');
      const rec = await client.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r');
      if (rec.rows[0]?.r === false) {
        const q = await client.query<{ lsn: string | null; ts: Date | null; wal: string }>(
          'SELECT pg_last_wal_replay_lsn()::text AS lsn, pg_last_xact_replay_timestamp() AS ts, pg_walfile_name(pg_current_wal_lsn()) AS wal',
        );
        const row = q.rows[0]!;
        return { replayLsn: row.lsn, replayTime: row.ts ? row.ts.toISOString() : null, timeline: parseInt(row.wal.slice(0, 8), 16), user: users[i]! };
      }
      last = 'still in recovery';
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code === '28000' && i + 1 < users.length) i++;
      else if (code === '28000' || code === '3D000') throw new DrillFailure('recovery failed', `cannot connect to the restored server: ${describeError(e)}`);
      last = `last answer: ${describeError(e)}`;
    } finally {
      await client?.end().catch(() => undefined);
    }
    await sleep(250);
  }
}

export interface AmcheckResult {
  ran: boolean;
  program?: string;
  args?: string[];
  output?: string;
  note?: string;
}

/** pg_amcheck on every database (installing the amcheck extension in this throwaway copy where missing). */
export async function runAmcheck(c: Conn, program: string | undefined, user: string, timeoutMs: number, stop: AbortSignal): Promise<AmcheckResult> {
  if (!program) return { ran: false, note: 'pg_amcheck is not installed (PostgreSQL 14 or later): skipped' };
  const args = ['--host', c.d.dir, '--port', String(c.server.port), '--username', user, '--no-password', '--all', '--install-missing'];
  const r = await runChild(program, args, c.d, timeoutMs, stop);
  const output = r.output.trim();
  if (r.code !== 0) {
    const first = output.split('\n').slice(0, 10).join('\n');
    throw new DrillFailure('amcheck corruption', `pg_amcheck ${r.signal ? `was killed by ${r.signal}` : `exited with code ${r.code}`}${first ? `:\n${first}` : ''}`);
  }
  return { ran: true, program, args: ['--all', '--install-missing'], ...(output ? { output } : {}) };
}

function runChild(cmd: string, args: string[], d: DrillDir, timeoutMs: number, stop: AbortSignal): Promise<{ code: number | null; signal: string | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: d.dir, env: ownerEnv(), stdio: ['ignore', 'pipe', 'pipe'], ...(d.owner ? { uid: d.owner.uid, gid: d.owner.gid } : {}) });
    let output = '';
    const add = (b: Buffer) => {
      if (output.length < 1024 * 1024) output += b.toString();
    };
    child.stdout.on('data', add);
    child.stderr.on('data', add);
    const kill = () => child.kill('SIGKILL');
    const timer = setTimeout(kill, timeoutMs);
    stop.addEventListener('abort', kill, { once: true });
    child.on('error', (e) => (output += `\n${e.message}`));
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      stop.removeEventListener('abort', kill);
      resolve({ code, signal, output });
    });
  });
}

export interface SqlResult {
  file: string;
  /** Rows of the last statement that returned rows. */
  columns: string[];
  rows: string[][];
}

/** The operator's SQL file, as one simple-protocol query (several statements allowed); any error fails the drill. */
export async function runSql(c: Conn, file: string, text: string, user: string, timeoutMs: number): Promise<SqlResult> {
  let client: pg.Client | undefined;
  try {
    client = await connect(c, user);
    await client.query(`SET statement_timeout = ${Math.max(1, Math.floor(timeoutMs))}`);
    const res = (await client.query(text)) as pg.QueryResult | pg.QueryResult[];
    const all = Array.isArray(res) ? res : [res];
    const last = [...all].reverse().find((r) => r.fields?.length > 0);
    const columns = last ? last.fields.map((f) => f.name) : [];
    const rows = last ? last.rows.map((r: Record<string, unknown>) => columns.map((k) => cell(r[k]))) : [];
    return { file, columns, rows };
  } catch (e) {
    const pos = (e as { position?: string }).position;
    throw new DrillFailure('SQL error', `${file}: ${describeError(e)}${pos ? ` (at character ${pos})` : ''}`);
  } finally {
    await client?.end().catch(() => undefined);
  }
}

function cell(v: unknown): string {
  if (v === null || v === undefined) return '';
  if (v instanceof Date) return v.toISOString();
  return typeof v === 'object' ? JSON.stringify(v) : String(v);
}

/** Fails the drill with CheckFailed, naming the reason. */
export function drillError(f: DrillFailure): Error {
  return checkFailedError(`restore-test failed (${f.reason}): ${f.message.split('\n')[0]}`);
}
