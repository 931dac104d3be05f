import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { SETTINGS } from '../../src/common/settings.js';

// The README's configuration table is the operator's reference: every setting must be in it.
describe('README configuration reference', () => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  it.each(SETTINGS.map((s) => [s.key, s] as const))('documents %s with its flag and environment variables', (_key, s) => {
    const row = readme.split('\n').find((l) => l.startsWith(`| \`${s.key}\` |`));
    expect(row, `README has no row for ${s.key}`).toBeDefined();
    expect(row).toContain(`\`--${s.flag}\``);
    for (const env of s.env) expect(row).toContain(`\`${env}\``);
  });
});
