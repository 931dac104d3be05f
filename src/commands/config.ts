import { describeConfig, type LoadedConfig } from '../common/config.js';

/** `walvault config [--json]`: the effective configuration, secrets masked, with each value's source. */
export function printConfig(loaded: LoadedConfig, json: boolean): number {
  const rows = describeConfig(loaded);
  if (json) {
    process.stdout.write(JSON.stringify(Object.fromEntries(rows.map((r) => [r.key, { value: r.value, source: r.source }])), null, 2) + '\n');
    return 0;
  }
  const width = Math.max(...rows.map((r) => r.key.length));
  const valueWidth = Math.min(60, Math.max(...rows.map((r) => r.value.length)));
  if (loaded.configFile) process.stdout.write(`# config file: ${loaded.configFile}\n`);
  for (const r of rows) process.stdout.write(`${r.key.padEnd(width)}  ${r.value.padEnd(valueWidth)}  # ${r.source}\n`);
  return 0;
}
