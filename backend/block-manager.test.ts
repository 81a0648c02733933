import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BlockManager } from './block-manager.ts';

describe('BlockManager', () => {
  it('grows tables block by block and returns every block on release', () => {
    const m = new BlockManager(4, 16);
    const a: number[] = [];
    assert.ok(m.ensure(a, 17));
    assert.deepEqual(a, [0, 1]);
    assert.ok(m.ensure(a, 32));
    assert.equal(a.length, 2);
    const b: number[] = [];
    assert.ok(m.ensure(b, 20));
    assert.equal(m.free, 0);
    assert.equal(m.ensure(a, 33), false);
    assert.equal(a.length, 2, 'a failed grow takes nothing');
    m.release(b);
    assert.deepEqual(b, []);
    assert.equal(m.free, 2);
    assert.ok(m.ensure(a, 64));
    assert.equal(new Set(a).size, 4);
  });

  it('rejects nonsense sizes', () => {
    assert.throws(() => new BlockManager(0, 16), /numBlocks/);
    assert.throws(() => new BlockManager(4, 1.5), /blockSize/);
  });
});
