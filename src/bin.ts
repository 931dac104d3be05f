// Entry point. Kept tiny and free of static imports of our own code: the compile cache must be on
// before the rest of walvault is parsed, and an old Node must get a clear message, not a SyntaxError.
import { mkdirSync } from 'node:fs';
import module from 'node:module';
import { join } from 'node:path';

const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 15)) {
  process.stderr.write(
    `walvault ERROR: ConfigError: Node ${process.versions.node} is too old; walvault needs Node >= 22.15 (built-in zstd). ` +
      'Point archive_command/restore_command at a newer node binary.\n',
  );
  // wal-fetch must not answer "not found" (1) for a broken installation during archive recovery.
  process.exit(process.argv.slice(2).includes('wal-fetch') ? 255 : 4);
}

// The cache lives in the invoking user's spool (PostgreSQL runs us as its own user): a cache
// directory owned by someone else would be silently unusable. A spool that does not exist yet is
// created private first: enableCompileCache would create it with the umask's mode.
try {
  const spool = process.env['WALVAULT_SPOOL'] || join(process.env['HOME'] || (await import('node:os')).homedir(), '.cache', 'walvault');
  mkdirSync(spool, { recursive: true, mode: 0o700 });
  module.enableCompileCache?.(join(spool, 'compile-cache'));
} catch {
  // Only a speed-up; never a reason to fail.
}

// wal-push and wal-fetch run once per WAL segment: they skip yargs (more expensive to load than Node's
// own start-up) unless the command line is unusual; see src/cli/hot-path.ts.
const argv = process.argv.slice(2);
// backup-fetch's extraction as the data directory's owner (src/backup/restore-worker.ts).
if (argv[0] === '__restore-worker') {
  const { workerMain } = await import('./backup/restore-worker.js');
  process.exit(await workerMain(argv.slice(1)));
}
const { fastMain } = await import('./cli/hot-path.js');
const fast = await fastMain(argv);
if (fast !== null) process.exit(fast);
const { main } = await import('./cli/main.js');
process.exit(await main(argv));
