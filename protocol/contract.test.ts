// The gateway ▶ backend contract's name rules and tenant adapter ids, as both sides rely on them.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  ADAPTER_FILES,
  isAdapterFile,
  isAdapterName,
  isServedAdapterSource,
  isTenantId,
  tenantAdapterId,
  tenantOfAdapter,
} from './contract.ts';

describe('gateway-backend contract', () => {
  it('tenant ids: 1-63 lowercase letters, digits or "-", not starting with "-"', () => {
    for (const ok of ['a', 'acme', 'acme-2', '0', 'a'.repeat(63)]) assert.equal(isTenantId(ok), true, ok);
    for (const bad of ['', '-a', 'Acme', 'a_b', 'a.b', 'a/b', 'a'.repeat(64), '..', 42, null]) assert.equal(isTenantId(bad), false, String(bad));
  });

  it('adapter names: one path segment, never "." or ".." or hidden', () => {
    for (const ok of ['my-adapter', 'A.b_c-1', 'x'.repeat(128)]) assert.equal(isAdapterName(ok), true, ok);
    for (const bad of ['', '.', '..', '.hidden', 'a/b', 'a\\b', 'x'.repeat(129), 'a b', '-a']) assert.equal(isAdapterName(bad), false, bad);
  });

  it('adapter files are exactly the two PEFT files', () => {
    assert.deepEqual([...ADAPTER_FILES], ['adapter_config.json', 'adapter_model.safetensors']);
    assert.equal(isAdapterFile('adapter_model.safetensors'), true);
    assert.equal(isAdapterFile('adapter_model.bin'), false);
    assert.equal(isAdapterFile('../adapter_config.json'), false);
  });

  it('a tenant adapter id names its owner; ids outside tenants/ have none', () => {
    const id = tenantAdapterId('acme', 'my-adapter');
    assert.equal(id, 'tenants/acme/my-adapter');
    assert.equal(tenantOfAdapter(id), 'acme');
    assert.equal(tenantOfAdapter('tenants/acme/x/y'), 'acme');
    for (const none of ['my-adapter', 'org/repo', 'tenantsx/acme/a', 'tenants/acme']) {
      assert.equal(tenantOfAdapter(none), null, none);
    }
  });

  it('hub, local and s3 are served (pbase is refused)', () => {
    assert.deepEqual(['hub', 'local', 's3', 'pbase'].filter(isServedAdapterSource), ['hub', 'local', 's3']);
  });
});
