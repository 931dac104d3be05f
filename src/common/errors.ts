// Every failure a user can cause has a named class and one documented exit code (README "Exit codes").
// PostgreSQL treats 1-125 as "retry later" (archive_command) or "not in archive" (restore_command) and
// anything above 125 as fatal, so the codes below stay in 2..125; only wal-fetch's recovery policy
// (src/wal/recovery-mode.ts) may turn an error into a code above 125.

export const ExitCode = {
  ok: 0,
  notFound: 1,
  usage: 2,
  badWalName: 3,
  config: 4,
  localFile: 5,
  repoMismatch: 6,
  conflict: 7,
  accessDenied: 8,
  storageUnavailable: 9,
  integrity: 10,
  localWrite: 11,
  walGap: 12,
  missingBucket: 13,
  backup: 14,
  internal: 70,
} as const;
export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

export class WalvaultError extends Error {
  /** Short stable name shown in logs, e.g. "StorageUnavailable". */
  readonly code: string;
  readonly exitCode: number;
  /** Worth another attempt inside the retry deadline (network, 5xx, throttling, transport corruption). */
  readonly retryable: boolean;

  constructor(code: string, exitCode: number, message: string, options?: { cause?: unknown; retryable?: boolean }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = code;
    this.code = code;
    this.exitCode = exitCode;
    this.retryable = options?.retryable ?? false;
  }
}

type Opts = { cause?: unknown };
const make =
  (code: string, exitCode: number, retryable = false) =>
  (message: string, opts?: Opts) =>
    new WalvaultError(code, exitCode, message, { ...opts, retryable });

export const usageError = make('UsageError', ExitCode.usage);
export const badWalNameError = make('BadWalName', ExitCode.badWalName);
export const configError = make('ConfigError', ExitCode.config);
export const localFileError = make('LocalFileError', ExitCode.localFile);
export const repoMismatchError = make('RepositoryMismatch', ExitCode.repoMismatch);
export const conflictError = make('ArchiveConflict', ExitCode.conflict);
export const accessDeniedError = make('AccessDenied', ExitCode.accessDenied);
export const unavailableError = make('StorageUnavailable', ExitCode.storageUnavailable, true);
/** Transport-level corruption (checksum mismatch while reading): retried, since the next read may be clean. */
export const integrityError = make('IntegrityError', ExitCode.integrity, true);
export const localWriteError = make('LocalWriteError', ExitCode.localWrite);
export const walGapError = make('WalGap', ExitCode.walGap);
export const missingBucketError = make('MissingBucket', ExitCode.missingBucket);
export const backupError = make('BackupError', ExitCode.backup);

export function isWalvaultError(e: unknown): e is WalvaultError {
  return e instanceof WalvaultError;
}

/** Maps local filesystem errno codes to the right class: reading the source vs writing a destination. */
export function fromFsError(e: unknown, what: string, side: 'read' | 'write'): WalvaultError {
  if (isWalvaultError(e)) return e;
  const err = e as NodeJS.ErrnoException;
  const code = err?.code ?? 'EUNKNOWN';
  const detail = `${what}: ${code}${err?.message ? ` (${err.message.replace(/^\w+: /, '')})` : ''}`;
  if (side === 'write') return localWriteError(`cannot write ${detail}`, { cause: e });
  return localFileError(`cannot read ${detail}`, { cause: e });
}

export function describe(e: unknown): string {
  if (e instanceof Error) return e.message;
  return String(e);
}
