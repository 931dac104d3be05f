import { describe } from '../common/errors.js';
import { connectClient, endClient } from '../backup/pg-connect.js';
import { resolveConnParams } from '../backup/pg-conninfo.js';
import { parseLsn, segmentNumber } from '../wal/names.js';

// What the server says about its archiving (pg_stat_archiver) and where it is writing now, for info.

export interface ArchiverState {
  lastArchivedWal: string | null;
  lastArchivedTime: string | null;
  failedCount: number;
  lastFailedWal: string | null;
  lastFailedTime: string | null;
  /** pg_walfile_name(pg_current_wal_lsn()). */
  currentWal: string;
  /** Complete segments written but not archived yet (0: only the one being written). */
  lagSegments: number | null;
}

const LIBPQ_ENV = ['PGHOST', 'PGHOSTADDR', 'PGPORT', 'PGDATABASE', 'PGUSER', 'PGSERVICE'];

/** Whether info should connect: --dbname given, or libpq settings in the environment. */
export function wantsConnection(dbname: string | undefined, env: NodeJS.ProcessEnv): boolean {
  return dbname !== undefined || LIBPQ_ENV.some((k) => !!env[k]);
}

const iso = (v: unknown): string | null => (v instanceof Date ? v.toISOString() : v == null ? null : String(v));

export async function readArchiver(dbname: string | undefined, env: NodeJS.ProcessEnv): Promise<ArchiverState> {
  const params = resolveConnParams(dbname, env);
  const client = await connectClient({ ...params, fallbackApplicationName: params.fallbackApplicationName ?? 'walvault info' }, env);
  try {
    const r = await client.query(
      'SELECT last_archived_wal, last_archived_time, failed_count, last_failed_wal, last_failed_time, ' +
        'pg_walfile_name(pg_current_wal_lsn()) AS current_wal, pg_current_wal_lsn()::text AS current_lsn, ' +
        "(SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size') AS seg " +
        'FROM pg_stat_archiver',
    );
    const row = r.rows[0] as Record<string, unknown>;
    const last = row['last_archived_wal'] == null ? null : String(row['last_archived_wal']);
    const current = String(row['current_wal']);
    const segSize = Number(row['seg']);
    let lag: number | null = null;
    if (last && /^[0-9A-F]{24}/.test(last)) {
      // Segments before the one the next byte goes to are complete (pg_walfile_name names the previous
      // segment at a boundary, so it cannot tell).
      const writing = parseLsn(String(row['current_lsn'])) / BigInt(segSize);
      lag = Math.max(0, Number(writing - 1n - segmentNumber(last.slice(0, 24), segSize)));
    }
    return {
      lastArchivedWal: last,
      lastArchivedTime: iso(row['last_archived_time']),
      failedCount: Number(row['failed_count']),
      lastFailedWal: row['last_failed_wal'] == null ? null : String(row['last_failed_wal']),
      lastFailedTime: iso(row['last_failed_time']),
      currentWal: current,
      lagSegments: lag,
    };
  } catch (e) {
    throw new Error(`reading pg_stat_archiver failed: ${describe(e)}`);
  } finally {
    await endClient(client);
  }
}
