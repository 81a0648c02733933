import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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

  it('--max-uploads-per-tenant (MAX_UPLOADS_PER_TENANT): 4 by default, at least 1', () => {
    assert.equal(parseServeConfig(['--model-id', '/m'], {}).maxUploadsPerTenant, 4);
    assert.equal(parseServeConfig(['--model-id', '/m', '--max-uploads-per-tenant', '9'], {}).maxUploadsPerTenant, 9);
    assert.equal(parseServeConfig(['--model-id', '/m'], { MAX_UPLOADS_PER_TENANT: '2' }).maxUploadsPerTenant, 2);
    assert.throws(() => parseServeConfig(['--model-id', '/m', '--max-uploads-per-tenant', '0'], {}), /--max-uploads-per-tenant/);
    assert.match(serveHelp(), /--max-uploads-per-tenant/);
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
    assert.throws(() => parseServeConfig(['--model-id', '/m', '--adapter-source', 'pbase'], {}), /--adapter-source/);
    assert.throws(() => parseServeConfig(['stray'], {}), /unexpected argument "stray"/);
  });

  it('reads secrets from files and the environment, and warns when one is on the command line', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sb-config-'));
    try {
      writeFileSync(join(dir, 'key'), 'k'.repeat(40) + '\n');
      writeFileSync(join(dir, 'hf'), 'hf_from_file');
      const warnings: string[] = [];
      const warn = (m: string) => void warnings.push(m);
      const f = parseServeConfig(['--model-id', '/m', '--service-key-file', join(dir, 'key'), `--hub-token-file=${join(dir, 'hf')}`], {}, { warn });
      assert.equal(f.serviceKey, 'k'.repeat(40), 'the trailing newline is not part of the key');
      assert.equal(f.hubToken, 'hf_from_file');
      const e = parseServeConfig(['--model-id', '/m'], { SWITCHBOARD_SERVICE_KEY_FILE: join(dir, 'key'), HF_TOKEN: 'hf_env' }, { warn });
      assert.equal(e.serviceKey, 'k'.repeat(40));
      assert.equal(e.hubToken, 'hf_env');
      assert.equal(warnings.length, 0);
      parseServeConfig(['--model-id', '/m', '--service-key', 'x'.repeat(40), '--hub-token', 'hf_x'], {}, { warn });
      assert.equal(warnings.length, 2);
      assert.match(warnings[0]!, /--service-key on the command line shows in `ps`.*--service-key-file <path> or the SWITCHBOARD_SERVICE_KEY environment variable/);
      assert.throws(() => parseServeConfig(['--model-id', '/m', '--service-key-file', join(dir, 'none')], {}), /--service-key-file: cannot read .*ENOENT/);
      assert.throws(() => parseServeConfig(['--model-id', '/m', '--port-file', 'x'], {}), /unknown option --port-file/, 'only secrets have -file forms');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('--json-output (LoRAX\'s name) and the older --json-logs', () => {
    assert.equal(parseServeConfig(['--model-id', '/m', '--json-output'], {}).json, true);
    assert.equal(parseServeConfig(['--model-id', '/m', '--json-logs'], {}).json, true);
    assert.equal(parseServeConfig(['--model-id', '/m'], { JSON_OUTPUT: 'true' }).json, true);
    assert.equal(parseServeConfig(['--model-id', '/m'], {}).json, false);
  });

  it('documents every option with its environment variable', () => {
    const help = serveHelp();
    for (const s of ['--max-concurrent-requests', 'MAX_CONCURRENT_REQUESTS', '--adapter-cycle-time-s', '--service-key', '--service-key-file', 'SWITCHBOARD_SERVICE_KEY_FILE', '[default: 8080]']) assert.ok(help.includes(s), s);
  });
});
