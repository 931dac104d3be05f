import { describe as describeError } from '../common/errors.js';
import { log } from '../common/log.js';
import { connectClient, endClient } from './pg-connect.js';
import { describeTarget, parseKeyValueConninfo, resolveConnParams } from './pg-conninfo.js';
import type { BackupSession } from './pg-session.js';

// A backup taken on a standby (backup_label "BACKUP FROM: standby") ends at the standby's replay
// position: pg_backup_stop there neither switches WAL nor writes a backup history file, and a
// standby cannot switch WAL. The segment holding the stop LSN reaches the archive only once the
// primary finishes it (its archive_command, or the standby's with archive_mode = always, archives
// whole segments only): on an idle primary with archive_timeout = 0, never. So once the files are
// read, walvault asks the primary, through the standby's own primary_conninfo, to switch WAL when
// it is still writing that segment (pg_switch_wal: a superuser, or EXECUTE granted). When it cannot,
// it says why and waits for the archive as always (backupWaitTimeout): archive_timeout on the
// primary then bounds the wait.

/** primary_conninfo keys that mean the same to node-postgres; libpq-only ones are left out. */
const KEEP = ['host', 'port', 'user', 'password', 'passfile', 'sslmode', 'sslrootcert', 'sslcert', 'sslkey', 'connect_timeout', 'dbname'];

/** The parts of primary_conninfo walvault's own connection can use, as a conninfo string. */
export function primaryConnString(conninfo: string): string {
  const given = parseKeyValueConninfo(conninfo);
  const q = (v: string) => `'${v.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
  return KEEP.flatMap((k) => (given.has(k) ? [`${k}=${q(given.get(k)!)}`] : [])).join(' ');
}

/**
 * Asks the primary to finish the WAL segment holding `stopLsn` when it is still the one being
 * written; every failure is a warning (the wait for the archive decides).
 */
export async function finishStopSegmentOnPrimary(session: BackupSession, stopLsn: string, stopSegment: string, signal: AbortSignal): Promise<void> {
  const conninfo = await session.primaryConninfo(signal);
  const hint = `waiting for the primary to archive ${stopSegment} (archive_timeout on the primary bounds that wait)`;
  if (!conninfo) {
    log.warn(`this is a standby without a readable primary_conninfo (connect as a superuser or a member of pg_read_all_settings): ${hint}`);
    return;
  }
  // Only what primary_conninfo says: the PG* environment names the standby backup-push connected to.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('PG')));
  let where = 'the primary';
  try {
    const params = resolveConnParams(primaryConnString(conninfo), env);
    where = describeTarget(params);
    const client = await connectClient(params, env, signal);
    try {
      const standby = (await client.query('SELECT pg_is_in_recovery() AS r')).rows[0] as { r?: boolean } | undefined;
      if (standby?.r !== false) {
        log.warn(`the upstream server ${where} is itself a standby (cascading replication): ${hint}`);
        return;
      }
      const row = (await client.query('SELECT pg_walfile_name(pg_current_wal_lsn()) = pg_walfile_name($1::pg_lsn) AS same', [stopLsn])).rows[0] as { same?: boolean } | undefined;
      if (!row?.same) return; // already past the segment: it is archived (or on its way)
      const s = await client.query('SELECT pg_walfile_name(pg_switch_wal()) AS f');
      log.info(`asked the primary at ${where} to switch WAL (pg_switch_wal) so that it archives ${stopSegment}, which ends this standby backup (${(s.rows[0] as { f?: string })?.f ?? ''})`);
    } finally {
      await endClient(client);
    }
  } catch (e) {
    if (signal.aborted) throw signal.reason;
    log.warn(`cannot ask the primary at ${where} to switch WAL (${describeError(e)}): ${hint}`);
  }
}
