import type { Config } from '../common/config.js';

// restore_command runs with PGDATA as its working directory. A transient error reported as exit 1
// reads as "end of WAL": archive recovery would finish early and promote onto a new timeline with
// committed transactions missing. So in archive recovery errors stop recovery (exit > 125), while on
// a standby (where exit > 125 kills the server) they exit 1 and PostgreSQL retries or streams.
// Which of the two applies is read from the signal files by cli/report-failure.ts (detectRecoveryMode).
export type RecoveryMode = 'standby' | 'recovery' | 'none';

export interface FetchErrorDecision {
  exitCode: number;
  branch: 'stop' | 'retry';
  reason: string;
}

export function fetchErrorDecision(config: Config, mode: RecoveryMode): FetchErrorDecision {
  const policy = config.fetchErrorPolicy;
  const branch = policy === 'auto' ? (mode === 'standby' ? 'retry' : 'stop') : policy;
  const why =
    policy === 'auto'
      ? mode === 'standby'
        ? 'standby.signal present'
        : mode === 'recovery'
          ? 'recovery.signal present: archive recovery'
          : 'no standby.signal: treated as archive recovery'
      : `fetchErrorPolicy=${policy}`;
  if (branch === 'retry') {
    return { exitCode: 1, branch, reason: `exiting 1 so PostgreSQL retries or streams (${why})` };
  }
  return {
    exitCode: config.fetchStopExitCode,
    branch,
    reason: `exiting ${config.fetchStopExitCode} to stop recovery rather than end it early (${why}); fix the cause and restart PostgreSQL to resume`,
  };
}
