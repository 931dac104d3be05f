// `walvault check --pg`: is the server archiving through walvault into this repository? Reads
// archive_mode / archive_command, compares the system identifier with walvault.json, then (on a
// primary) forces a WAL switch and waits, within `deadline`, for that segment to arrive in the
// repository, like pgBackRest's check.
import { realpathSync } from 'node:fs';
import { resolve } from 'node:path';
import type pg from 'pg';
import { describe } from '../common/errors.js';
import { maskCommandSecrets } from '../common/redact.js';
import { Deadline, withRetry, type RetryPolicy } from '../common/retry.js';
import { sleep } from '../common/sleep.js';
import type { RepoManifest } from '../archive/manifest-parse.js';
import { connectClient, endClient } from '../backup/pg-connect.js';
import { describeTarget, resolveConnParams } from '../backup/pg-conninfo.js';
import type { Storage } from '../storage/types.js';
import { parseWalName, walObjectKey } from '../wal/names.js';
import type { Probe } from './check-report.js';

export interface PgCheckInput {
  dbname: string | undefined;
  env: NodeJS.ProcessEnv;
  /** The config file this check loaded, if any. */
  configFile: string | undefined;
  manifest: RepoManifest | null;
  /** Undefined when the store probes failed: the switched segment cannot be looked for. */
  storage: Storage | undefined;
  policy: RetryPolicy;
  /** How long to wait for the switched segment (the `deadline` setting). */
  waitMs: number;
}

const SETTINGS_SQL =
  "SELECT current_setting('archive_mode') AS am, current_setting('archive_command') AS ac, " +
  "coalesce(current_setting('archive_library', true), '') AS al, current_setting('server_version') AS v, " +
  'pg_is_in_recovery() AS r, (SELECT system_identifier::text FROM pg_control_system()) AS s, ' +
  "(SELECT setting FROM pg_settings WHERE name = 'wal_segment_size')::bigint AS seg";
const ARCHIVER_SQL =
  "SELECT archived_count, coalesce(last_archived_wal, '') AS aw, last_archived_time AS at, failed_count, " +
  "coalesce(last_failed_wal, '') AS fw, last_failed_time AS ft FROM pg_stat_archiver";

/** The config file an archive_command names (--config X, --config=X, WALVAULT_CONFIG=X), if any. */
export function configNamedIn(command: string): string | undefined {
  const m = /(?:--config[= ]\s*|WALVAULT_CONFIG=)(?:'([^']*)'|"([^"]*)"|(\S+))/.exec(command);
  return m ? (m[1] ?? m[2] ?? m[3]) : undefined;
}

function samePath(a: string, b: string): boolean {
  const norm = (p: string) => {
    try {
      return realpathSync(p);
    } catch {
      return resolve(p);
    }
  };
  return norm(a) === norm(b);
}

/** archive_mode and archive_command, judged: pure, so that the rules have unit tests. */
export function judgeArchiveSettings(s: { mode: string; command: string; library: string; inRecovery: boolean }, configFile: string | undefined): Probe[] {
  const out: Probe[] = [];
  const restart = 'in postgresql.conf (or ALTER SYSTEM), then restart PostgreSQL';
  if (s.mode === 'off') out.push({ name: 'archive_mode', status: 'fail', detail: 'off: PostgreSQL archives nothing', fix: `set archive_mode = on ${restart}` });
  else if (s.mode === 'on' && s.inRecovery) out.push({ name: 'archive_mode', status: 'ok', detail: 'on (this standby archives only once promoted; archive_mode = always archives here too)' });
  else out.push({ name: 'archive_mode', status: 'ok', detail: s.mode });

  const want = "archive_command = 'walvault wal-push %p %f'";
  const c = s.command.trim();
  // Shown, never its secrets (people put AWS_SECRET_ACCESS_KEY=... in archive_command).
  const shown = JSON.stringify(maskCommandSecrets(c).slice(0, 200));
  if (s.mode === 'off' && c === '(disabled)') {
    // PostgreSQL shows archive_command as "(disabled)" while archive_mode is off.
    out.push({ name: 'archive_command', status: 'skip', detail: 'not readable while archive_mode is off (PostgreSQL shows "(disabled)")' });
  } else if (s.library) {
    out.push({ name: 'archive_command', status: 'fail', detail: `archive_library = '${s.library}' is set, so archive_command is not used`, fix: `set archive_library = '' and ${want}, then reload` });
  } else if (!c || c === '(disabled)') {
    out.push({ name: 'archive_command', status: 'fail', detail: 'empty: PostgreSQL keeps WAL waiting in pg_wal', fix: `set ${want}, then reload` });
  } else if (!/\bwalvault\b/.test(c) || !/\bwal-push\b/.test(c) || !c.includes('%p')) {
    out.push({ name: 'archive_command', status: 'fail', detail: `${shown} does not run walvault wal-push %p %f`, fix: `set ${want}, then reload` });
  } else {
    const named = configNamedIn(c);
    const other = named !== undefined ? (configFile === undefined || !samePath(named, configFile)) : configFile !== undefined;
    if (other) {
      out.push({
        name: 'archive_command',
        status: 'warn',
        detail: `${shown} uses ${named ? `config ${named}` : 'no config file'}, this check ${configFile ? `used ${configFile}` : 'used none'}: the archiver may write to another repository than the one checked`,
        fix: named ? `run walvault check --config ${named}` : 'give archive_command the same --config',
      });
    } else {
      out.push({ name: 'archive_command', status: 'ok', detail: shown });
    }
  }
  return out;
}

export async function runPgChecks(input: PgCheckInput): Promise<Probe[]> {
  const out: Probe[] = [];
  let client: pg.Client;
  let where = 'PostgreSQL';
  try {
    const params = { ...resolveConnParams(input.dbname, input.env), fallbackApplicationName: 'walvault check' };
    where = describeTarget(params);
    client = await connectClient(params, input.env, AbortSignal.timeout(params.connectTimeout > 0 ? params.connectTimeout * 2000 + 1000 : 30_000));
  } catch (e) {
    return [{ name: 'postgresql', status: 'fail', detail: describe(e), fix: 'give the server with --dbname CONNINFO or PGHOST, PGPORT, PGUSER (as for psql)' }];
  }
  try {
    await client.query("SET statement_timeout = '30s'");
    const s = (await client.query(SETTINGS_SQL)).rows[0] as { am: string; ac: string; al: string; v: string; r: boolean; s: string; seg: string };
    out.push({ name: 'postgresql', status: 'ok', detail: `${where}: PostgreSQL ${s.v.split(' ')[0]}, ${s.r ? 'a standby (in recovery)' : 'a primary'}, system identifier ${s.s}` });
    const settings = judgeArchiveSettings({ mode: s.am, command: s.ac, library: s.al, inRecovery: s.r }, input.configFile);
    out.push(...settings);
    out.push(systemProbe(s.s, Number(s.seg), input.manifest));
    out.push(await archiverProbe(client));
    if (s.r) {
      out.push({ name: 'wal-switch', status: 'skip', detail: 'the server is in recovery: pg_switch_wal() only runs on the primary; run check --pg against the primary' });
    } else if (settings.some((p) => p.status === 'fail') || !input.storage) {
      out.push({ name: 'wal-switch', status: 'skip', detail: input.storage ? 'not tried: archiving is not set up (see above)' : 'not tried: the repository is not usable (see above)' });
    } else {
      out.push(await switchProbe(client, input.storage, input));
    }
  } catch (e) {
    out.push({ name: 'postgresql', status: 'fail', detail: `${where}: ${describe(e)}`, fix: 'connect as a superuser, or a user with pg_monitor and EXECUTE on pg_switch_wal()' });
  } finally {
    await endClient(client);
  }
  return out;
}

function systemProbe(sysid: string, segSize: number, m: RepoManifest | null): Probe {
  const name = 'system-identifier';
  if (!m) return { name, status: 'ok', detail: `server ${sysid}; the repository has no walvault.json yet (the first archived segment creates it)` };
  if (m.systemIdentifier !== sysid || m.walSegmentSize !== segSize) {
    return {
      name,
      status: 'fail',
      detail: `server ${sysid} (${segSize / 1048576} MiB segments), repository ${m.systemIdentifier} (${m.walSegmentSize / 1048576} MiB segments): wal-push refuses this server's WAL (RepositoryMismatch)`,
      fix: 'use a repository prefix of its own for this cluster',
    };
  }
  return { name, status: 'ok', detail: `server and walvault.json agree: ${sysid}, ${segSize / 1048576} MiB segments` };
}

interface ArchiverRow {
  archived_count: string;
  aw: string;
  at: Date | null;
  failed_count: string;
  fw: string;
  ft: Date | null;
}

async function archiverRow(client: pg.Client): Promise<ArchiverRow | undefined> {
  return (await client.query(ARCHIVER_SQL).catch(() => undefined))?.rows[0] as ArchiverRow | undefined;
}

function describeArchiver(a: ArchiverRow): string {
  const last = a.aw ? `last archived ${a.aw}${a.at ? ` at ${a.at.toISOString()}` : ''}` : 'nothing archived yet';
  const failed = Number(a.failed_count) > 0 ? `, failed_count ${a.failed_count} (last_failed_wal ${a.fw}${a.ft ? ` at ${a.ft.toISOString()}` : ''})` : ', failed_count 0';
  return `pg_stat_archiver: ${last}${failed}`;
}

async function archiverProbe(client: pg.Client): Promise<Probe> {
  const a = await archiverRow(client);
  if (!a) return { name: 'archiver', status: 'skip', detail: 'pg_stat_archiver could not be read' };
  const failing = a.ft !== null && (a.at === null || a.ft > a.at);
  return failing
    ? { name: 'archiver', status: 'warn', detail: `${describeArchiver(a)}: the last attempt failed`, fix: "look at PostgreSQL's log for the archive_command error" }
    : { name: 'archiver', status: 'ok', detail: describeArchiver(a) };
}

async function switchProbe(client: pg.Client, storage: Storage, input: PgCheckInput): Promise<Probe> {
  const name = 'wal-switch';
  // A restore point writes WAL, so the switch always ends a segment (on an idle server it would not).
  const before = String((await client.query('SELECT pg_current_wal_insert_lsn() AS l')).rows[0].l);
  const point = await client.query("SELECT pg_create_restore_point('walvault check')").then(
    () => undefined,
    (e: unknown) => describe(e),
  );
  const switched = (await client.query('SELECT pg_walfile_name(l) AS w, l > $1::pg_lsn AS moved FROM pg_switch_wal() AS l', [before])).rows[0];
  const seg = String(switched.w);
  if (switched.moved !== true) {
    // Nothing was written since the last switch: pg_switch_wal() did nothing and names a segment
    // that may have been archived long ago, which would prove nothing.
    return {
      name,
      status: 'fail',
      detail: `pg_switch_wal() switched nothing (no WAL since the last switch${point ? `; pg_create_restore_point failed: ${point}` : ''})`,
      fix: 'run check --pg as a user that may call pg_create_restore_point() (a superuser, or GRANT EXECUTE), or when the server writes WAL',
    };
  }
  const key = walObjectKey(parseWalName(seg));
  const started = Date.now();
  const until = started + input.waitMs;
  for (let delay = 100; ; delay = Math.min(delay * 2, 1000)) {
    const left = until - Date.now();
    const deadline = new Deadline(Math.max(1000, Math.min(left, 30_000)));
    let found = false;
    try {
      found = (await withRetry(`check: head ${key}`, input.policy, deadline, (signal) => storage.head(key, { signal }))) !== null;
    } catch (e) {
      return { name, status: 'fail', detail: `switched to a new segment after ${seg}, but looking for it in ${storage.url} failed: ${describe(e)}`, fix: 'see the store probes above' };
    } finally {
      deadline.dispose();
    }
    if (found) return { name, status: 'ok', detail: `pg_switch_wal() ended ${seg}; it arrived in ${storage.url} after ${((Date.now() - started) / 1000).toFixed(1)} s` };
    if (Date.now() >= until) break;
    await sleep(Math.min(delay, Math.max(0, until - Date.now())));
  }
  const a = await archiverRow(client);
  return {
    name,
    status: 'fail',
    detail: `pg_switch_wal() ended ${seg}, which did not arrive in ${storage.url} within ${input.waitMs / 1000} s (deadline)${a ? `; ${describeArchiver(a)}` : ''}`,
    fix: "look at pg_stat_archiver (failed_count, last_failed_wal) and PostgreSQL's log for the archive_command error",
  };
}
