import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError, parseServeConfig, serveHelp } from './config.ts';

describe('switchboard serve options', () => {
  it('reads LoRAX launcher flags, --flag=value, environment variables, then defaults', () => {
    const c = parseServeConfig(['--model-id', '/m', '--max-input-length=100', '--adapter-source', 'local', '--json-logs'], {
      MAX_TOTAL_TOKENS: '200',
      PORT: '9000',
      SWITCHBOARD_HOSTNAME: '0.0.0.0',
      HOSTNAME: 'my-laptop',
    });
    assert.equal(c.modelId, '/m');
    assert.equal(c.maxInputLength, 100);
    assert.equal(c.maxTotalTokens, 200);
    assert.equal(c.port, 9000);
    assert.equal(c.hostname, '0.0.0.0');
    assert.equal(c.adapterSource, 'local');
    assert.equal(c.json, true);
    assert.equal(c.maxBatchPrefillTokens, 4096);
    assert.equal(c.waitingServedRatio, 1.2);
    assert.equal(c.device, 'auto');
  });

  it('a flag wins over its environment variable; HOSTNAME alone is not the listen address', () => {
    const c = parseServeConfig(['--model-id', '/m', '--port', '1234'], { PORT: '9000', HOSTNAME: 'my-laptop' });
    assert.equal(c.port, 1234);
    assert.equal(c.hostname, '127.0.0.1');
  });

  it('refuses unknown flags, missing values and bad values with the option named', () => {
    assert.throws(() => parseServeConfig([], {}), (e: unknown) => e instanceof ConfigError && /--model-id \(or MODEL_ID\) is required/.test(e.message));
    assert.throws(() => parseServeConfig(['--model-id', '/m', '--nope', '1'], {}), /unknown option --nope/);
    assert.throws(() => parseServeConfig(['--model-id'], {}), /--model-id needs a value/);
    assert.throws(() => parseServeConfig(['--model-id', '/m', '--port', 'abc'], {}), /--port \(or PORT\) got "abc"/);
    assert.throws(() => parseServeConfig(['--model-id', '/m', '--adapter-source', 's3'], {}), /--adapter-source/);
    assert.throws(() => parseServeConfig(['stray'], {}), /unexpected argument "stray"/);
  });

  it('documents every option with its environment variable', () => {
    const help = serveHelp();
    for (const s of ['--max-concurrent-requests', 'MAX_CONCURRENT_REQUESTS', '--adapter-cycle-time-s', '--service-key', '[default: 8080]']) assert.ok(help.includes(s), s);
  });
});
