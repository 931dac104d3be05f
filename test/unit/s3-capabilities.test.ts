// What the S3 driver remembers about a store's conditional writes (src/storage/s3/capabilities.ts):
// per store identity (endpoint and bucket), in the process and in the spool; one probe at a time.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { conditionalSupport, readSupport, rememberSupport, type ConditionalSupport } from '../../src/storage/s3/capabilities.js';

const dir = mkdtempSync(join(tmpdir(), 'wv-capabilities-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('S3 store capabilities', () => {
  it('remembers one answer per store identity; the endpoint is part of it', () => {
    const file = join(dir, 'a', 'repos', 'x', 's3-capabilities.json');
    expect(readSupport(file, 'http://proxy:1|bucket')).toBeUndefined();
    rememberSupport(file, 'http://proxy:1|bucket', 'ignored');
    rememberSupport(file, 'http://rgw:7480|bucket', 'enforced');
    expect(readSupport(file, 'http://proxy:1|bucket')).toBe('ignored');
    expect(readSupport(file, 'http://rgw:7480|bucket')).toBe('enforced');
    expect(readSupport(file, 'http://other:1|bucket')).toBeUndefined();
    expect(JSON.parse(readFileSync(file, 'utf8'))).toEqual({
      conditionalWrites: { 'http://proxy:1|bucket': 'ignored', 'http://rgw:7480|bucket': 'enforced' },
    });
  });

  it('reads the format before the probe, and treats a damaged file or value as no answer', () => {
    const file = join(dir, 'old.json');
    writeFileSync(file, JSON.stringify({ noConditionalWrites: 'http://swift:8080|b' }));
    expect(readSupport(file, 'http://swift:8080|b')).toBe('unsupported');
    expect(readSupport(file, 'http://rgw:7480|b')).toBeUndefined();
    writeFileSync(file, '{not json');
    expect(readSupport(file, 'http://swift:8080|b')).toBeUndefined();
    writeFileSync(file, JSON.stringify({ conditionalWrites: { s: 'maybe' } }));
    expect(readSupport(file, 's')).toBeUndefined();
    rememberSupport(file, 's', 'unsupported'); // a damaged file is replaced, not a reason to fail
    expect(readSupport(file, 's')).toBe('unsupported');
  });

  it('probes once per store for concurrent callers, uses the spool answer, and probes again after a failed probe', async () => {
    const file = join(dir, 'probe.json');
    let probes = 0;
    const probe = (answer: ConditionalSupport) => async () => {
      probes++;
      await new Promise((r) => setTimeout(r, 20));
      return answer;
    };
    const answers = await Promise.all([1, 2, 3].map(() => conditionalSupport('s1', file, probe('ignored'))));
    expect(answers).toEqual(['ignored', 'ignored', 'ignored']);
    expect(probes).toBe(1);
    expect(readSupport(file, 's1')).toBe('ignored');

    rememberSupport(file, 's2', 'enforced'); // another process found out
    expect(await conditionalSupport('s2', file, probe('ignored'))).toBe('enforced');
    expect(probes).toBe(1);

    let fail = true;
    const flaky = async (): Promise<ConditionalSupport> => {
      probes++;
      if (fail) throw new Error('503');
      return 'enforced';
    };
    await expect(conditionalSupport('s3', file, flaky)).rejects.toThrow('503');
    fail = false;
    expect(await conditionalSupport('s3', file, flaky)).toBe('enforced');
    expect(probes).toBe(3);
  });
});
