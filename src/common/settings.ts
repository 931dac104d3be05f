// The table of every setting: its flag, environment variables (first set wins), config-file key,
// type and default. `walvault config`, the CLI's global flags and the README reference are all
// generated from or checked against this one list, so they cannot drift apart.
export type SettingType = 'string' | 'boolean' | 'int' | 'seconds' | 'bytes';

export interface SettingDef {
  /** Config-file key (camelCase) and property name in the resolved settings. */
  key: string;
  /** Command-line flag without dashes. */
  flag: string;
  env: readonly string[];
  type: SettingType;
  default?: string | number | boolean;
  choices?: readonly string[];
  secret?: boolean;
  /** Bounds checked at load (ints, seconds and sizes); 'seconds' default to what a timer accepts. */
  min?: number;
  max?: number;
  describe: string;
}

/** Node's timers (setTimeout, AbortSignal.timeout, socket timeouts) hold at most 2^31-1 ms; a longer
 * delay fires after 1 ms instead, so a longer duration would turn every wait into an instant timeout. */
export const TIMER_MAX_SECONDS = Math.floor((2 ** 31 - 1) / 1000);

// `as const` keeps each key, type, choices and default as literals, so SettingValues below derives the
// resolved settings' type from this list instead of retyping it.
const TABLE = [
  { key: 'repo', flag: 'repo', env: ['WALVAULT_REPO'], type: 'string', describe: 'repository URL: s3://bucket/prefix or file:///path' },
  { key: 'spool', flag: 'spool', env: ['WALVAULT_SPOOL'], type: 'string', describe: 'local cache directory outside PGDATA (default ~/.cache/walvault)' },
  { key: 'compression', flag: 'compression', env: ['WALVAULT_COMPRESSION'], type: 'string', default: 'zstd', choices: ['zstd', 'gzip', 'none'], describe: 'codec for new objects' },
  { key: 'compressionLevel', flag: 'compression-level', env: ['WALVAULT_COMPRESSION_LEVEL'], type: 'int', max: 22, describe: 'codec level (zstd default 1, gzip default 6)' },
  { key: 'logLevel', flag: 'log-level', env: ['WALVAULT_LOG_LEVEL'], type: 'string', default: 'info', choices: ['error', 'warn', 'info', 'debug'], describe: 'stderr verbosity' },
  { key: 'retries', flag: 'retries', env: ['WALVAULT_RETRIES'], type: 'int', default: 8, max: 1_000_000, describe: 'retries per storage call after the first attempt' },
  { key: 'retryMinDelay', flag: 'retry-min-delay', env: ['WALVAULT_RETRY_MIN_DELAY'], type: 'seconds', default: 0.2, describe: 'first backoff delay, seconds (doubles, with jitter)' },
  { key: 'retryMaxDelay', flag: 'retry-max-delay', env: ['WALVAULT_RETRY_MAX_DELAY'], type: 'seconds', default: 5, describe: 'longest backoff delay, seconds' },
  { key: 'attemptTimeout', flag: 'attempt-timeout', env: ['WALVAULT_ATTEMPT_TIMEOUT'], type: 'seconds', default: 60, describe: 'one request including its body is aborted after this many seconds (per started 64 MiB of a larger PUT body)' },
  { key: 'deadline', flag: 'deadline', env: ['WALVAULT_DEADLINE'], type: 'seconds', default: 120, describe: 'a command gives up after this many seconds in all' },
  { key: 'connectTimeout', flag: 'connect-timeout', env: ['WALVAULT_CONNECT_TIMEOUT'], type: 'seconds', default: 5, describe: 'TCP/TLS connect timeout, seconds' },
  { key: 'idleTimeout', flag: 'idle-timeout', env: ['WALVAULT_IDLE_TIMEOUT'], type: 'seconds', default: 20, describe: 'abort a request whose socket is silent this long, seconds' },
  { key: 'highWaterInterval', flag: 'high-water-interval', env: ['WALVAULT_HIGH_WATER_INTERVAL'], type: 'seconds', default: 60, describe: 'wal-push writes a new per-timeline archived high-water mark (gap detection; one write-once object each) at most this often' },
  { key: 'maxReadyBytes', flag: 'max-ready-bytes', env: ['WALVAULT_MAX_READY_BYTES'], type: 'bytes', describe: 'opt-in disk-full protection: past this archive backlog, wal-push drops the oldest WAL (reported archived, NOT stored; breaks PITR across it)' },
  { key: 'lookahead', flag: 'lookahead', env: ['WALVAULT_LOOKAHEAD'], type: 'int', default: 8, max: 64, describe: 'wal-push also uploads up to this many other ready WAL files (archive_status/*.ready) in parallel and records them in the spool, so their own wal-push exits at once (0 = off)' },
  { key: 'fastPathHash', flag: 'fast-path-hash', env: ['WALVAULT_FAST_PATH_HASH'], type: 'boolean', default: false, describe: 'the fast path re-hashes a file uploaded ahead even when its identity (device, inode, size, mtime, ctime) is the one recorded while it was read' },
  { key: 'prefetch', flag: 'prefetch', env: ['WALVAULT_PREFETCH'], type: 'int', default: 8, max: 256, describe: 'after serving a segment, wal-fetch has one background process download up to this many following segments into the spool (0 = off)' },
  { key: 'prefetchMaxBytes', flag: 'prefetch-max-bytes', env: ['WALVAULT_PREFETCH_MAX_BYTES'], type: 'bytes', default: 128 * 1024 * 1024, max: 1024 ** 4, describe: 'disk the prefetched segments of one restore may take in the spool (e.g. 128MiB)' },
  { key: 'fetchErrorPolicy', flag: 'fetch-error-policy', env: ['WALVAULT_FETCH_ERROR_POLICY'], type: 'string', default: 'auto', choices: ['auto', 'stop', 'retry'], describe: 'wal-fetch on errors: stop = exit above 125 (recovery stops), retry = exit 1 (PostgreSQL retries/streams), auto = retry with standby.signal, else stop' },
  { key: 'fetchStopExitCode', flag: 'fetch-stop-exit-code', env: ['WALVAULT_FETCH_STOP_EXIT_CODE'], type: 'int', default: 255, describe: 'exit code (126-255) wal-fetch uses to stop recovery' },
  { key: 'encryptionKeyFile', flag: 'encryption-key-file', env: ['WALVAULT_ENCRYPTION_KEY_FILE'], type: 'string', describe: 'keyring file (one line per key: key id, space, 64 hex digits; the first encrypts, every one decrypts; mode 0600): client-side AES-256-GCM of every object written' },
  { key: 'encryptionKeyCommand', flag: 'encryption-key-command', env: ['WALVAULT_ENCRYPTION_KEY_COMMAND'], type: 'string', secret: true, describe: 'a command (run with /bin/sh -c) printing the keyring on stdout, instead of encryptionKeyFile (Vault, a KMS)' },
  { key: 's3Endpoint', flag: 's3-endpoint', env: ['WALVAULT_S3_ENDPOINT', 'AWS_ENDPOINT_URL_S3', 'AWS_ENDPOINT_URL'], type: 'string', describe: 'S3 endpoint URL for S3-compatible stores' },
  { key: 's3Region', flag: 's3-region', env: ['WALVAULT_S3_REGION', 'AWS_REGION', 'AWS_DEFAULT_REGION'], type: 'string', describe: 'S3 region (us-east-1 when an endpoint is set)' },
  { key: 's3ForcePathStyle', flag: 's3-force-path-style', env: ['WALVAULT_S3_FORCE_PATH_STYLE'], type: 'boolean', default: false, describe: 'path-style URLs (most S3-compatible stores)' },
  { key: 's3Profile', flag: 's3-profile', env: ['WALVAULT_S3_PROFILE', 'AWS_PROFILE'], type: 'string', describe: 'shared config/credentials profile' },
  { key: 's3AccessKeyId', flag: 's3-access-key-id', env: ['AWS_ACCESS_KEY_ID'], type: 'string', secret: true, describe: 'static access key (else the SDK credential chain)' },
  { key: 's3SecretAccessKey', flag: 's3-secret-access-key', env: ['AWS_SECRET_ACCESS_KEY'], type: 'string', secret: true, describe: 'static secret key' },
  { key: 's3SessionToken', flag: 's3-session-token', env: ['AWS_SESSION_TOKEN'], type: 'string', secret: true, describe: 'session token for temporary credentials' },
  { key: 's3CaBundle', flag: 's3-ca-bundle', env: ['WALVAULT_S3_CA_BUNDLE', 'AWS_CA_BUNDLE'], type: 'string', describe: 'PEM file of extra CA certificates' },
  { key: 's3StorageClass', flag: 's3-storage-class', env: ['WALVAULT_S3_STORAGE_CLASS'], type: 'string', describe: 'storage class for new objects' },
  { key: 's3Sse', flag: 's3-sse', env: ['WALVAULT_S3_SSE'], type: 'string', choices: ['AES256', 'aws:kms'], describe: 'server-side encryption' },
  { key: 's3SseKmsKeyId', flag: 's3-sse-kms-key-id', env: ['WALVAULT_S3_SSE_KMS_KEY_ID'], type: 'string', describe: 'KMS key id for aws:kms' },
  { key: 's3ChecksumMode', flag: 's3-checksum-mode', env: ['WALVAULT_S3_CHECKSUM_MODE'], type: 'string', default: 'when_required', choices: ['when_required', 'when_supported'], describe: 'SDK flexible checksums (when_supported breaks many non-AWS stores)' },
  { key: 's3ConditionalWrites', flag: 's3-conditional-writes', env: ['WALVAULT_S3_CONDITIONAL_WRITES'], type: 'string', default: 'auto', choices: ['auto', 'on', 'off'], describe: 'If-None-Match on PutObject: auto probes each store once and falls back to HEAD+PUT when it answers 501 or ignores the header; on refuses such a store' },
  { key: 's3ObjectLockMode', flag: 's3-object-lock-mode', env: ['WALVAULT_S3_OBJECT_LOCK_MODE'], type: 'string', choices: ['governance', 'compliance'], describe: 'S3 Object Lock retention mode put on every object walvault writes (needs s3ObjectLockDays and a bucket created with Object Lock)' },
  { key: 's3ObjectLockDays', flag: 's3-object-lock-days', env: ['WALVAULT_S3_OBJECT_LOCK_DAYS'], type: 'int', min: 1, max: 36_500, describe: 'days each written object stays locked (retain-until = time of the write + this; needs s3ObjectLockMode)' },
  { key: 's3PartSize', flag: 's3-part-size', env: ['WALVAULT_S3_PART_SIZE'], type: 'bytes', default: 16 * 1024 * 1024, min: 5 * 1024 * 1024, max: 5 * 1024 ** 3, describe: 'multipart part size for base backups (e.g. 16MiB)' },
  { key: 's3QueueSize', flag: 's3-queue-size', env: ['WALVAULT_S3_QUEUE_SIZE'], type: 'int', default: 3, min: 1, max: 64, describe: 'parallel parts for base backups (memory = part size x queue size)' },
  { key: 'backupBundleSize', flag: 'backup-bundle-size', env: ['WALVAULT_BACKUP_BUNDLE_SIZE'], type: 'bytes', default: 32 * 1024 * 1024, min: 1024 * 1024, max: 1024 ** 3, describe: 'backups pack files smaller than an eighth of this into data objects of at most this size; larger files are objects of their own' },
  { key: 'backupJobs', flag: 'jobs', env: ['WALVAULT_BACKUP_JOBS'], type: 'int', min: 1, max: 64, describe: 'files and objects backup-push and backup-fetch work on at once (default: the number of CPU cores)' },
  { key: 'backupWaitTimeout', flag: 'backup-wait-timeout', env: ['WALVAULT_BACKUP_WAIT_TIMEOUT'], type: 'seconds', default: 120, describe: 'backup-push waits at most this long for the WAL segment that ends the backup to be archived' },
  { key: 'backupStaleUploadAge', flag: 'backup-stale-upload-age', env: ['WALVAULT_BACKUP_STALE_UPLOAD_AGE'], type: 'seconds', default: 86400, max: 3650 * 86400, describe: 'backup-push aborts incomplete backup uploads older than this many seconds (left by a killed backup-push)' },
  { key: 'retainFull', flag: 'retain-full', env: ['WALVAULT_RETAIN_FULL'], type: 'int', min: 1, max: 1_000_000, describe: 'delete keeps the newest this many full backups and every incremental built on them (with retainDays: the union)' },
  { key: 'retainDays', flag: 'retain-days', env: ['WALVAULT_RETAIN_DAYS'], type: 'int', min: 1, max: 36_500, describe: 'delete keeps every backup that ended within this many days, plus the newest older one, so any point of those days stays restorable' },
  { key: 'pgBinDir', flag: 'pg-bin-dir', env: ['WALVAULT_PG_BIN_DIR'], type: 'string', describe: 'directory of pg_basebackup / pg_verifybackup (default: PATH, then /usr/lib/postgresql/<version>/bin)' },
] as const satisfies readonly SettingDef[];

export const SETTINGS: readonly SettingDef[] = TABLE;

type Def = (typeof TABLE)[number];
type ValueOf<D extends Def> = D extends { choices: readonly (infer C)[] }
  ? C
  : D['type'] extends 'boolean'
    ? boolean
    : D['type'] extends 'string'
      ? string
      : number;

/** Each setting's resolved value: present when the table gives it a default, else optional. */
export type SettingValues = { [D in Def as D extends { default: unknown } ? D['key'] : never]: ValueOf<D> } & {
  [D in Def as D extends { default: unknown } ? never : D['key']]?: ValueOf<D>;
};

export type SettingSource = 'flag' | 'env' | 'file' | 'default';
