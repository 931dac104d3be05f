import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/common/config.js';
import { detectRecoveryMode } from '../../src/cli/report-failure.js';
import { fetchErrorDecision } from '../../src/wal/recovery-mode.js';

describe('recovery mode policy', () => {
  it('detects signal files, standby winning over recovery', () => {
    const d = mkdtempSync(join(tmpdir(), 'wv-mode-'));
    expect(detectRecoveryMode(d)).toBe('none');
    writeFileSync(join(d, 'recovery.signal'), '');
    expect(detectRecoveryMode(d)).toBe('recovery');
    writeFileSync(join(d, 'standby.signal'), '');
    expect(detectRecoveryMode(d)).toBe('standby');
  });

  it('stops recovery (exit > 125) in archive recovery and retries (exit 1) on a standby', () => {
    const { config } = loadConfig({}, {});
    expect(fetchErrorDecision(config, 'recovery')).toMatchObject({ exitCode: 255, branch: 'stop' });
    expect(fetchErrorDecision(config, 'none')).toMatchObject({ exitCode: 255, branch: 'stop' });
    expect(fetchErrorDecision(config, 'standby')).toMatchObject({ exitCode: 1, branch: 'retry' });
  });

  it('honours an explicit policy and exit code', () => {
    const { config } = loadConfig({ 'fetch-error-policy': 'stop', 'fetch-stop-exit-code': '200' }, {});
    expect(fetchErrorDecision(config, 'standby')).toMatchObject({ exitCode: 200, branch: 'stop' });
    const retry = loadConfig({ 'fetch-error-policy': 'retry' }, {}).config;
    expect(fetchErrorDecision(retry, 'recovery')).toMatchObject({ exitCode: 1, branch: 'retry' });
  });
});
