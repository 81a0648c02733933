import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BlockManager } from './block-manager.ts';
import { BlockHashes, rootHash } from './prefix-cache.ts';

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

describe('BlockManager prefix caching', () => {
  it('shares committed blocks between tables, counting holders; a shared block is freed by its last holder only', () => {
    const m = new BlockManager(6, 4);
    const a: number[] = [];
    assert.ok(m.ensure(a, 10));
    m.commit(a[0]!, 'h0');
    m.commit(a[1]!, 'h1');
    assert.deepEqual(m.match(['h0', 'h1', 'h2']), [a[0], a[1]], 'longest cached prefix');
    assert.deepEqual(m.match(['hX', 'h1']), [], 'a prefix, not any block');
    assert.deepEqual(m.match(['h0', 'h1'], 1), [a[0]], 'at most max blocks');
    const b: number[] = [];
    assert.ok(m.ensureWithPrefix(b, m.match(['h0', 'h1']), 12));
    assert.deepEqual(b.slice(0, 2), a.slice(0, 2));
    assert.equal(b.length, 3);
    assert.equal(m.used, 4, 'two shared blocks count once');
    m.release(a);
    assert.equal(m.used, 3, "a's private block is free, the shared ones still held by b");
    assert.equal(m.idleCached, 0);
    m.release(b);
    assert.equal(m.used, 0);
    assert.equal(m.free, 6, 'idle cached blocks count as free');
    assert.equal(m.idleCached, 2);
    assert.equal(m.cached, 2);
    assert.throws(() => m.release([0]), /released twice/);
  });

  it('reclaims idle cached blocks only when no free block is left, least recently released first, a tail before its head', () => {
    const m = new BlockManager(4, 2);
    const a: number[] = [];
    const b: number[] = [];
    assert.ok(m.ensure(a, 4));
    assert.ok(m.ensure(b, 4));
    ['a0', 'a1'].forEach((h, i) => m.commit(a[i]!, h));
    ['b0', 'b1'].forEach((h, i) => m.commit(b[i]!, h));
    const [a0, a1] = a;
    m.release(a); // released first: reclaimed first
    m.release(b);
    assert.equal(m.idleCached, 4);
    const c: number[] = [];
    assert.ok(m.ensure(c, 2));
    assert.equal(m.evictions, 1);
    assert.deepEqual(c, [a1], "a's tail went first");
    assert.deepEqual(m.match(['a0', 'a1']), [a0], 'its head is still cached');
    assert.ok(m.ensure(c, 4));
    assert.deepEqual(m.match(['a0']), [], 'then its head');
    assert.deepEqual(m.match(['b0', 'b1']).length, 2, "b's blocks, released later, are still cached");
    assert.equal(m.evictions, 2);
    assert.equal(m.cached, 2);
  });

  it('a hit moves blocks out of the idle pool; released again they are the most recently used', () => {
    const m = new BlockManager(3, 2);
    const t: number[][] = [[], [], []];
    t.forEach((x, i) => {
      assert.ok(m.ensure(x, 2));
      m.commit(x[0]!, `h${i}`);
    });
    t.forEach((x) => m.release(x)); // idle order: h0, h1, h2
    const again: number[] = [];
    assert.ok(m.ensureWithPrefix(again, m.match(['h0']), 2));
    m.release(again); // idle order: h1, h2, h0
    const fresh: number[] = [];
    assert.ok(m.ensure(fresh, 2));
    assert.deepEqual([m.match(['h0']).length, m.match(['h1']).length, m.match(['h2']).length], [1, 0, 1]);
  });

  it('ensureWithPrefix takes nothing when the pool is short, not counting its own idle prefix blocks as free', () => {
    const m = new BlockManager(3, 2);
    const a: number[] = [];
    assert.ok(m.ensure(a, 4));
    m.commit(a[0]!, 'p0');
    m.commit(a[1]!, 'p1');
    m.release(a);
    const other: number[] = [];
    assert.ok(m.ensure(other, 2)); // the one never-used block
    assert.equal(m.free, 2);
    const b: number[] = [];
    // Both idle blocks are its prefix: a third block would have to reclaim one of them.
    assert.equal(m.ensureWithPrefix(b, m.match(['p0', 'p1']), 5), false);
    assert.deepEqual(b, []);
    assert.equal(m.idleCached, 2);
    assert.equal(m.evictions, 0);
    assert.ok(m.ensureWithPrefix(b, m.match(['p0', 'p1']), 4));
    assert.equal(m.free, 0);
  });

  it('keeps the first block committed under a hash; a duplicate stays private and is freed, not cached', () => {
    const m = new BlockManager(4, 2);
    const a: number[] = [];
    const b: number[] = [];
    assert.ok(m.ensure(a, 2));
    assert.ok(m.ensure(b, 2));
    m.commit(a[0]!, 'same');
    m.commit(b[0]!, 'same');
    assert.deepEqual(m.match(['same']), [a[0]]);
    m.release(b);
    assert.equal(m.idleCached, 0);
    m.release(a);
    assert.equal(m.idleCached, 1);
    assert.throws(() => m.commit(3, 'x'), /no sequence holds/);
  });
});

describe('prefix hashes', () => {
  it('chain the parent: equal blocks after different prefixes differ; the root separates adapters and salts', () => {
    const root = rootHash('local:/a@1', null);
    const h = (r: string, toks: number[], n: number) => [...new BlockHashes(r, 2).upTo(toks, n)].slice(0, n);
    const x = h(root, [1, 2, 3, 4], 2);
    const y = h(root, [9, 2, 3, 4], 2);
    assert.equal(x.length, 2);
    assert.notEqual(x[0], y[0]);
    assert.notEqual(x[1], y[1], 'same tokens, different parent');
    assert.deepEqual(h(root, [1, 2, 3, 4, 5], 2), x, 'only the block tokens count');
    const roots = [rootHash(null, null), rootHash('local:/a@1', null), rootHash('local:/a@2', null), rootHash('local:/b@1', null), rootHash(null, 't1'), rootHash(null, 't2'), rootHash('local:/a@1', 't1')];
    assert.equal(new Set(roots).size, roots.length);
    assert.equal(new Set(roots.map((r) => h(r, [1, 2], 1)[0])).size, roots.length);
    assert.throws(() => new BlockHashes(root, 2).upTo([1, 2, 3], 2), /full blocks/);
  });

  it('does not confuse token boundaries (ids are hashed as fixed-width integers)', () => {
    const root = rootHash(null, null);
    const a = new BlockHashes(root, 2).upTo([1, 23], 1)[0];
    const b = new BlockHashes(root, 2).upTo([12, 3], 1)[0];
    assert.notEqual(a, b);
  });
});
