// The backend's one error mapping: each kind of RequestError in LoRAX's and OpenAI's shapes (status
// and body), errors of unknown cause as a bare 500, and which API a path speaks.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { apiShapeOf, errorBody, mapError, RequestError } from './errors.ts';

describe('backend errors', () => {
  it('LoRAX shape: error_type per kind; the status the thrower chose, except fixed ones', () => {
    const cases: [RequestError, number, string][] = [
      [new RequestError('bad', 422), 422, 'validation'],
      [new RequestError('too big', 413), 413, 'validation'],
      [new RequestError('no token', 401, 'unauthorized'), 401, 'unauthorized'],
      [new RequestError('no route', 404, 'not_found'), 404, 'not_found'],
      [new RequestError('adapter "x" not found', 404, 'adapter'), 404, 'adapter'],
      [new RequestError('adapter "x": bad config', 422, 'adapter'), 422, 'adapter'],
      [new RequestError('Model is overloaded', 429, 'overloaded'), 429, 'overloaded'],
      [new RequestError('device lost', 424, 'generation'), 424, 'generation'],
    ];
    for (const [err, status, type] of cases) {
      assert.deepEqual(mapError('lorax', err), { status, body: { error: err.message, error_type: type } }, err.message);
    }
  });

  it('OpenAI shape: 422 becomes 400, the type follows the status, generation failures are 500 server_error', () => {
    const cases: [RequestError, number, string, string | null][] = [
      [new RequestError('bad', 422), 400, 'invalid_request_error', null],
      [new RequestError('chat template: boom', 400, 'validation', { param: 'messages' }), 400, 'invalid_request_error', 'messages'],
      [new RequestError('too big', 413), 413, 'invalid_request_error', null],
      [new RequestError('no token', 401, 'unauthorized'), 401, 'authentication_error', null],
      [new RequestError('wrong scope', 403, 'unauthorized'), 403, 'permission_error', null],
      [new RequestError('no route', 404, 'not_found'), 404, 'not_found_error', null],
      [new RequestError('adapter "x" not found', 404, 'adapter'), 404, 'not_found_error', null],
      [new RequestError('not allowed to read adapter "x"', 403, 'adapter'), 403, 'permission_error', null],
      [new RequestError('adapter "x": bad config', 422, 'adapter'), 400, 'invalid_request_error', null],
      [new RequestError('Model is overloaded', 429, 'overloaded'), 429, 'rate_limit_error', null],
      [new RequestError('device lost', 424, 'generation'), 500, 'server_error', null],
    ];
    for (const [err, status, type, param] of cases) {
      assert.deepEqual(mapError('openai', err), { status, body: { error: { message: err.message, type, param, code: null } } }, err.message);
    }
  });

  it('an error of unknown cause answers 500 without its message', () => {
    const secret = new Error("ENOENT: rename '/srv/adapters/tenants/acme/x/.partial'");
    assert.deepEqual(mapError('lorax', secret), { status: 500, body: { error: 'internal error', error_type: 'generation' } });
    assert.deepEqual(mapError('openai', secret), { status: 500, body: { error: { message: 'internal error', type: 'server_error', param: null, code: null } } });
    assert.deepEqual(errorBody('lorax', 'not even an Error'), { error: 'internal error', error_type: 'generation' });
  });

  it('keeps the cause of a wrapped failure for the logs', () => {
    const cause = new Error('cuda: illegal address');
    const err = new RequestError(cause.message, 424, 'generation', { cause });
    assert.equal(err.cause, cause);
    assert.equal(err.name, 'RequestError');
  });

  it('OpenAI under /v1/, LoRAX elsewhere', () => {
    assert.equal(apiShapeOf('/v1/chat/completions'), 'openai');
    assert.equal(apiShapeOf('/v1/models'), 'openai');
    for (const p of ['/generate', '/generate_stream', '/', '/tokenize', '/health', '/v1', '/v10/x']) assert.equal(apiShapeOf(p), 'lorax', p);
  });
});
