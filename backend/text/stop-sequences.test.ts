import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { StopMatcher } from './stop-sequences.ts';

describe('StopMatcher', () => {
  it('finds a stop string split across deltas and keeps it (LoRAX)', () => {
    const m = new StopMatcher(['END'], true);
    assert.deepEqual(m.push('hello E'), { text: 'hello E', stopped: false });
    assert.deepEqual(m.push('ND and more'), { text: 'ND', stopped: true });
    assert.equal(m.output, 'hello END');
  });

  it('holds back a possible stop prefix and cuts before the stop (OpenAI)', () => {
    const m = new StopMatcher(['\n\n', 'STOP'], false);
    assert.deepEqual(m.push('a ST'), { text: 'a ', stopped: false });
    assert.deepEqual(m.push('x'), { text: 'STx', stopped: false });
    assert.deepEqual(m.push(' line\n'), { text: ' line', stopped: false });
    assert.deepEqual(m.push('\nignored'), { text: '', stopped: true });
    assert.equal(m.output, 'a STx line');
  });

  it('picks the earliest stop and flushes held text when generation ends', () => {
    const m = new StopMatcher(['bb', 'ab'], false);
    assert.deepEqual(m.push('xabb'), { text: 'x', stopped: true });
    const n = new StopMatcher(['xyz'], false);
    assert.deepEqual(n.push('abcxy'), { text: 'abc', stopped: false });
    assert.equal(n.flush(), 'xy');
    assert.equal(n.output, 'abcxy');
  });

  it('works with no stop strings', () => {
    const m = new StopMatcher([], false);
    assert.deepEqual(m.push('abc'), { text: 'abc', stopped: false });
  });
});
