import { expect } from 'vitest';
import { WalvaultError } from '../../src/common/errors.js';

/** What a rejected storage call threw, as a WalvaultError (fails the test otherwise). */
export async function failure(p: Promise<unknown>): Promise<WalvaultError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(WalvaultError);
    return e as WalvaultError;
  }
  throw new Error('expected a rejection');
}
