// Bundles src/bin.ts into dist/walvault.mjs. The AWS SDK sits in lazily imported chunks so that
// paths which never talk to S3 (name checks, the look-ahead fast path, file:// repos) never load it.
import { build } from 'esbuild';
import { chmod, rm } from 'node:fs/promises';

await rm('dist', { recursive: true, force: true });
await build({
  entryPoints: { walvault: 'src/bin.ts' },
  outdir: 'dist',
  outExtension: { '.js': '.mjs' },
  chunkNames: 'chunks/[name]-[hash]',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node22',
  minifySyntax: true,
  legalComments: 'none',
  logLevel: 'warning',
  // node-postgres loads its optional libpq binding (pg-native) only when asked to; walvault never does.
  external: ['pg-native'],
  // Some CommonJS dependencies call require() for Node built-ins; give the ESM bundle one.
  banner: {
    js: "#!/usr/bin/env node\nimport { createRequire as __wvCreateRequire } from 'node:module'; const require = __wvCreateRequire(import.meta.url);",
  },
});
await chmod('dist/walvault.mjs', 0o755);
