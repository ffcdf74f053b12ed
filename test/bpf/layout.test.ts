// One definition of each layout: the TypeScript codecs must match the BTF that clang wrote for the C structs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Btf } from '../../loader/src/libbpf';
import { STRUCTS, FAMILY, SERVICE_FLAG, SERVICE_SLOT_FLAG, BACKEND_FLAG, XDP_DR_MODE, MAGLEV_CHUNK, CONN_WAYS, CONN_STATE, XDP_DR_EVENT } from '../../loader/src/dataplane/layout';
import { ensureObject } from '../../loader/src/dataplane/build';
import { struct, u8, u32, u64, type StructCodec } from '../../loader/src/libbpf/codec';
import { refServiceKey, refBackend } from '../../loader/src/bench/micro';
import { CONN_GROUP_BUCKETS } from '../../loader/src/dataplane/flowhash';

const btf = Btf.fromFile(ensureObject('xdp_dr'));

function holdsToBtf(object: string, b: Btf, codecs: readonly StructCodec<unknown>[]): void {
  for (const codec of codecs) {
    test(`${object}: struct ${codec.cName}: size and every field offset match BTF`, () => {
      const c = b.struct(codec.cName);
      assert.equal(codec.size, c.size, `sizeof(struct ${codec.cName})`);
      assert.deepEqual(
        codec.fields.map((f) => [f.name, f.offset, f.size]),
        c.members.map((m) => [m.name, m.offset, m.size]),
        `fields of struct ${codec.cName} (name, offset, size)`,
      );
    });
  }
}

holdsToBtf('xdp_dr', btf, STRUCTS);
// The benchmark's straightforward DR program has its own layouts.
holdsToBtf('xdp_ref_dr', Btf.fromFile(ensureObject('xdp_ref_dr')), [refServiceKey, refBackend]);

test('enum values used by the loader match BTF', () => {
  assert.deepEqual(Object.fromEntries(btf.enumValues('xdp_dr_family')), FAMILY);
  assert.deepEqual(Object.fromEntries(btf.enumValues('service_flag')), SERVICE_FLAG);
  assert.deepEqual(Object.fromEntries(btf.enumValues('service_slot_flag')), SERVICE_SLOT_FLAG);
  assert.deepEqual(Object.fromEntries(btf.enumValues('backend_flag')), BACKEND_FLAG);
  assert.deepEqual(Object.fromEntries(btf.enumValues('xdp_dr_mode')), XDP_DR_MODE);
  assert.deepEqual(Object.fromEntries(btf.enumValues('conn_state')), CONN_STATE);
  assert.deepEqual(Object.fromEntries(btf.enumValues('xdp_dr_event')), XDP_DR_EVENT);
  assert.equal(btf.enumValues('xdp_dr_build').get('XDP_DR_MAGLEV_CHUNK'), MAGLEV_CHUNK);
  assert.equal(btf.enumValues('xdp_dr_build').get('XDP_DR_CONN_WAYS'), CONN_WAYS);
  assert.equal(btf.enumValues('xdp_dr_build').get('XDP_DR_CONN_GROUP_BUCKETS'), CONN_GROUP_BUCKETS);
  const stats = btf.enumValues('xdp_dr_stat');
  assert.equal(stats.get('XDP_DR_STAT_TX'), 0);
  assert.equal(stats.get('XDP_DR_STAT_MAX'), stats.size - 1, 'the counters are dense and _MAX ends them');
});

test('the check can fail: a codec with a field out of place is caught', () => {
  const wrong = struct('counter', [['packets', u64], ['bytes', u32], ['pad', u8]] as const);
  const c = btf.struct('counter');
  assert.notDeepEqual(wrong.fields.map((f) => [f.name, f.offset, f.size]), c.members.map((m) => [m.name, m.offset, m.size]));
});

test('the object declares its load-time constants in .rodata', () => {
  const names = btf.sectionVars('.rodata').map((v) => v.name);
  assert.ok(names.includes('hash_seed'));
});
