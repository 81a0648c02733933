// Identifiers from the pooled randomness: the shape callers rely on (prefix, hex of the asked
// length), no repeats across many pool refills, and sizes past the pool still served whole.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { randomId } from './crypto.ts';

describe('randomId', () => {
  it('is the prefix and 2 hex digits per byte, never repeated across pool refills', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 20_000; i++) {
      // 9 bytes a lease id, 12 a key id: ~4 KiB pools refill hundreds of times here.
      const id = i % 2 ? randomId('lease') : randomId('key', 12);
      assert.match(id, i % 2 ? /^lease_[0-9a-f]{18}$/ : /^key_[0-9a-f]{24}$/);
      assert.equal(seen.has(id), false, `repeated: ${id}`);
      seen.add(id);
    }
  });

  it('serves a size past the pool in one piece', () => {
    assert.match(randomId('big', 5000), /^big_[0-9a-f]{10000}$/);
    assert.notEqual(randomId('big', 5000), randomId('big', 5000));
  });

  it('spreads its bytes: every hex digit appears in every position over many ids', () => {
    const ids = Array.from({ length: 4000 }, () => randomId('x').slice(2));
    for (let pos = 0; pos < 18; pos++) assert.equal(new Set(ids.map((s) => s[pos])).size, 16, `position ${pos}`);
  });
});
