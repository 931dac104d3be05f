// Every failure a user can cause has a name in ERRORS and one documented exit code (README "Exit codes",
// checked by test/unit/error-table.test.ts). PostgreSQL treats 1-125 as "retry later" (archive_command)
// or "not in archive" (restore_command) and anything above 125 as fatal, so the codes below stay in
// 2..125; only wal-fetch's recovery policy (src/wal/recovery-mode.ts) may turn an error into a code
// above 125. A name not in this table does not compile, so logs and exit codes cannot drift apart.

type ErrorSpec = { readonly exit: number; readonly retryable: boolean; readonly meaning: string };

/** The closed list: name shown in logs, exit code, whether it is retried by default, one-line meaning. */
export const ERRORS = {
  UsageError: { exit: 2, retryable: false, meaning: 'unknown flag, missing argument' },
  BadWalName: { exit: 3, retryable: false, meaning: 'not a WAL file name' },
  ConfigError: { exit: 4, retryable: false, meaning: 'bad setting, config file or environment' },
  LocalFileError: { exit: 5, retryable: false, meaning: 'the local source file cannot be read or is not what it should be' },
  RepositoryMismatch: { exit: 6, retryable: false, meaning: 'the WAL belongs to another system / version / segment size' },
  ArchiveConflict: { exit: 7, retryable: false, meaning: 'already archived with different content' },
  AccessDenied: { exit: 8, retryable: false, meaning: 'credentials or permissions refused' },
  StorageUnavailable: { exit: 9, retryable: true, meaning: 'network, timeouts, 5xx, throttling' },
  StorageError: { exit: 9, retryable: false, meaning: 'the store failed in a way another attempt will not fix' },
  RepositoryFull: { exit: 9, retryable: false, meaning: 'the file repository filesystem is full' },
  /** Transport-level corruption (checksum mismatch while reading): retried, since the next read may be clean. */
  IntegrityError: { exit: 10, retryable: true, meaning: 'checksum mismatch or undecodable data' },
  CorruptObject: { exit: 10, retryable: false, meaning: 'a stored object is not a valid walvault object' },
  LocalWriteError: { exit: 11, retryable: false, meaning: 'cannot write the local destination' },
  WalGap: { exit: 12, retryable: false, meaning: 'a WAL file is missing that the archive shows was archived' },
  MissingBucket: { exit: 13, retryable: false, meaning: 'bucket or repository directory or its walvault.json is missing' },
  BackupError: { exit: 14, retryable: false, meaning: 'base backup failures' },
  /** verify, check or restore-test ran to the end and found problems (each one named on stderr). */
  CheckFailed: { exit: 15, retryable: false, meaning: 'verify, check or restore-test found a problem' },
  InternalError: { exit: 70, retryable: false, meaning: 'a bug' },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorName = keyof typeof ERRORS;

export function isErrorName(name: unknown): name is ErrorName {
  return typeof name === 'string' && Object.hasOwn(ERRORS, name);
}

export const ExitCode = {
  ok: 0,
  notFound: 1,
  usage: ERRORS.UsageError.exit,
  badWalName: ERRORS.BadWalName.exit,
  config: ERRORS.ConfigError.exit,
  localFile: ERRORS.LocalFileError.exit,
  repoMismatch: ERRORS.RepositoryMismatch.exit,
  conflict: ERRORS.ArchiveConflict.exit,
  accessDenied: ERRORS.AccessDenied.exit,
  storageUnavailable: ERRORS.StorageUnavailable.exit,
  integrity: ERRORS.IntegrityError.exit,
  localWrite: ERRORS.LocalWriteError.exit,
  walGap: ERRORS.WalGap.exit,
  missingBucket: ERRORS.MissingBucket.exit,
  backup: ERRORS.BackupError.exit,
  checkFailed: ERRORS.CheckFailed.exit,
  internal: ERRORS.InternalError.exit,
} as const;
export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

type Opts = { cause?: unknown; retryable?: boolean };

export class WalvaultError extends Error {
  /** Short stable name shown in logs, e.g. "StorageUnavailable". */
  readonly code: ErrorName;
  readonly exitCode: number;
  /** Worth another attempt inside the retry deadline (network, 5xx, throttling, transport corruption). */
  readonly retryable: boolean;

  /** Exit code and default retryability come from ERRORS; a call site may override retryability. */
  constructor(code: ErrorName, message: string, options?: Opts) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = code;
    this.code = code;
    this.exitCode = ERRORS[code].exit;
    this.retryable = options?.retryable ?? ERRORS[code].retryable;
  }
}

const make = (code: ErrorName) => (message: string, opts?: Opts) => new WalvaultError(code, message, opts);

export const usageError = make('UsageError');
export const badWalNameError = make('BadWalName');
export const configError = make('ConfigError');
export const localFileError = make('LocalFileError');
export const repoMismatchError = make('RepositoryMismatch');
export const conflictError = make('ArchiveConflict');
export const accessDeniedError = make('AccessDenied');
export const unavailableError = make('StorageUnavailable');
export const storageError = make('StorageError');
export const repositoryFullError = make('RepositoryFull');
export const integrityError = make('IntegrityError');
export const corruptObjectError = make('CorruptObject');
export const localWriteError = make('LocalWriteError');
export const walGapError = make('WalGap');
export const missingBucketError = make('MissingBucket');
export const backupError = make('BackupError');
export const checkFailedError = make('CheckFailed');
export const internalError = make('InternalError');

/** The same class (name, exit code) with a new message: for adding context to an error on its way up. */
export function rewordError(e: WalvaultError, message: string, opts: { cause?: unknown; retryable: boolean }): WalvaultError {
  return new WalvaultError(e.code, message, opts);
}

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
