// The pools' worker threads run below the request loop's priority, and only they do: checked on
// the real JSON-body worker (json-body.ts), through the thread nice values Linux shows in /proc.
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import os from 'node:os';
import { test } from 'node:test';
import { INLINE_MAX_BYTES, parseJsonBodyAsync } from './json-body.ts';
import { WORKER_NICE } from './worker-priority.ts';

/** Nice values of this process's threads, from /proc (field 19 of each task's stat). */
function threadNices(): number[] {
  return readdirSync('/proc/self/task').map((t) => Number(readFileSync(`/proc/self/task/${t}/stat`, 'utf8').split(') ')[1]!.split(' ')[16]));
}

test('the JSON-body worker runs at WORKER_NICE while the loop keeps its priority', { skip: process.platform !== 'linux' && 'Linux keeps nice per thread; elsewhere the call is skipped' }, async () => {
  const loop = os.getPriority();
  const want = Math.max(loop, WORKER_NICE);
  assert.ok(!threadNices().includes(want) || loop >= WORKER_NICE, 'no thread runs at the worker nice before the worker starts');
  const big = new TextEncoder().encode(JSON.stringify({ inputs: 'x'.repeat(INLINE_MAX_BYTES + 10) }));
  const value = (await parseJsonBodyAsync(big)).value as { inputs: string };
  assert.equal(value.inputs.length, INLINE_MAX_BYTES + 10);
  assert.equal(os.getPriority(), loop, 'the loop thread keeps its priority');
  assert.ok(threadNices().includes(want), `a worker thread runs at nice ${want}: ${threadNices().join(', ')}`);
});
