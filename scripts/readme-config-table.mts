// Regenerates the configuration table in README.md from src/common/settings.ts:
//   node scripts/readme-config-table.mts
import { readFileSync, writeFileSync } from 'node:fs';
// @ts-expect-error -- run directly by Node (type stripping), which needs the .ts extension
import { SETTINGS } from "../src/common/settings.ts";

const rows = ['| key (config file) | flag | environment | default | meaning |', '|---|---|---|---|---|'];
for (const s of SETTINGS) {
  const d = s.default === undefined ? '' : s.type === 'bytes' && typeof s.default === 'number' ? `${s.default / 1024 / 1024}MiB` : String(s.default);
  const desc = s.describe.replace(/\|/g, '/') + (s.choices ? ` (${s.choices.join(' / ')})` : '');
  rows.push(`| \`${s.key}\` | \`--${s.flag}\` | ${s.env.map((e) => '`' + e + '`').join(', ')} | ${d} | ${desc} |`);
}
const readme = readFileSync('README.md', 'utf8');
const start = readme.indexOf('| key (config file) |');
let end = readme.indexOf('\n\n', start);
if (start < 0 || end < 0) throw new Error('README.md has no configuration table');
writeFileSync('README.md', readme.slice(0, start) + rows.join('\n') + readme.slice(end));
console.log(`README.md: ${SETTINGS.length} settings`);
