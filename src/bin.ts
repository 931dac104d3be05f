// Entry point. Kept tiny and free of static imports of our own code: the compile cache must be on
// before the rest of walvault is parsed, and an old Node must get a clear message, not a SyntaxError.
import module from 'node:module';
import { homedir } from 'node:os';
import { join } from 'node:path';

const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 15)) {
  process.stderr.write(
    `walvault ERROR: ConfigError: Node ${process.versions.node} is too old; walvault needs Node >= 22.15 (built-in zstd). ` +
      'Point archive_command/restore_command at a newer node binary.\n',
  );
  // wal-fetch must not answer "not found" (1) for a broken installation during archive recovery.
  process.exit(process.argv[2] === 'wal-fetch' ? 255 : 4);
}

// The cache lives in the invoking user's spool (PostgreSQL runs us as its own user): a cache
// directory owned by someone else would be silently unusable.
try {
  const spool = process.env['WALVAULT_SPOOL'] || join(process.env['HOME'] || homedir(), '.cache', 'walvault');
  module.enableCompileCache?.(join(spool, 'compile-cache'));
} catch {
  // Only a speed-up; never a reason to fail.
}

const { main } = await import('./cli.js');
const code = await main(process.argv.slice(2));
process.exit(code);
