// The libbpf layer against the real kernel: typed maps, per-CPU sums, errors with errno names and hints,
// build options, pins, and XDP attach/detach through a pinned bpf_link on a veth pair.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { Dataplane, attachPinned, detachPinned, LINK_PIN } from '../../loader/src/dataplane/dataplane';
import { RawMap, TypedMap, BpfError, possibleCpus, queryXdp, ifindexOf, u32, u64 } from '../../loader/src/libbpf';
import { ensureObject, BuildError } from '../../loader/src/dataplane/build';
import { serviceKeyOf } from '../../loader/src/dataplane/layout';
import { withDataplane, testPinDir, removePins } from '../lib/dataplane';

const v4 = (i: number) => Buffer.from([10, 1, i >> 8, i & 255]);

test('raw maps check buffer lengths against the kernel map', async () => {
  await withDataplane((dp) => {
    const raw = dp.backends.raw;
    assert.equal(raw.info.keySize, 4);
    assert.equal(raw.info.valueSize, 20);
    assert.throws(() => raw.lookup(Buffer.alloc(3)), /map 'backends': key is 3 bytes, the kernel map takes 4/);
    assert.throws(() => raw.update(Buffer.alloc(4), Buffer.alloc(19)), /value is 19 bytes, the kernel map takes 20/);
  });
});

test('typed maps: lookup of a missing key is undefined, update/delete round-trip', async () => {
  await withDataplane((dp) => {
    const key = { key: serviceKeyOf(v4(1), 80, 'tcp'), epoch: 0 };
    assert.equal(dp.services.lookup(key), undefined);
    dp.services.update(key, { id: 7, flags: 1, table: 14 });
    assert.deepEqual(dp.services.lookup(key), { id: 7, flags: 1, table: 14 });
    assert.equal([...dp.services.entries()].length, 1);
    assert.equal(dp.services.delete(key), true);
    assert.equal(dp.services.delete(key), false);
  });
});

test('a codec of the wrong size is refused when the map is opened', async () => {
  await withDataplane((dp) => {
    assert.throws(() => new TypedMap(dp.backends.raw, u32, u64), /different build/);
  });
});

test('batch update and batch read of an array', async () => {
  await withDataplane((dp) => {
    const n = 1000;
    const keys = Buffer.alloc(n * 4);
    const values = Buffer.alloc(n * 20);
    for (let i = 0; i < n; i++) {
      keys.writeUInt32LE(i + 1, i * 4);
      values.writeUInt32LE(0xabc00000 + i, i * 20 + 12);
    }
    dp.backends.raw.updateBatch(keys, values);
    const all = dp.backends.raw.lookupAll(333);
    assert.equal(all.count, 2 * dp.limits.maxBackends, 'one half per epoch');
    for (let i = 0; i < n; i++) assert.equal(dp.backends.lookup(i + 1)!.ifindex, 0xabc00000 + i);
    // A range read starts where it is asked to, also past the first batch cursor.
    for (const first of [0, 1, 500, dp.limits.maxBackends]) {
      const part = dp.backends.all({ first, count: 300 });
      assert.deepEqual(part.map(([k]) => k), Array.from({ length: 300 }, (_, i) => first + i));
      for (const [k, v] of part) assert.equal(v.ifindex, k >= 1 && k <= n ? 0xabc00000 + k - 1 : 0);
    }
  });
});

test('batch delete of hash keys, and a clear error for a missing one', async () => {
  await withDataplane((dp) => {
    const ek = (i: number) => ({ key: serviceKeyOf(v4(i), 80, 'tcp'), epoch: 0 });
    const keys = [1, 2, 3].map((i) => dp.services.encodeKey(ek(i)));
    dp.services.updateBatch([1, 2, 3].map((i) => [ek(i), { id: i, flags: 0, table: 2 * i }] as const));
    assert.equal([...dp.services.entries()].length, 3);
    dp.services.raw.deleteBatch(Buffer.concat(keys.slice(0, 2)));
    assert.deepEqual([...dp.services.entries()].map(([, v]) => v.id), [3]);
    assert.throws(() => dp.services.raw.deleteBatch(keys[0]), (e: unknown) => e instanceof BpfError && e.code === 'ENOENT' && /0 of 1 keys deleted/.test(e.message));
  });
});

test('libbpf warnings reach our logger and the error that follows them', async () => {
  const { logger } = await import('../../loader/src/log');
  const lines: string[] = [];
  const savedLevel = logger.level;
  logger.level = 'debug';
  const savedSink = logger.setSink((l) => lines.push(l));
  try {
    await withDataplane((dp) => {
      assert.throws(() => Dataplane.load({ pinDir: dp.pinDir, build: { MAX_BACKENDS: 64 } }), (e: unknown) => e instanceof BpfError && !!e.libbpfMessage);
    });
  } finally {
    logger.level = savedLevel;
    logger.setSink(savedSink);
  }
  assert.ok(lines.some((l) => /^debug libbpf: .*pinned map/.test(l)), `libbpf lines seen: ${lines.join(' | ')}`);
});

test('per-CPU values: one 8-byte aligned slot per possible CPU, summed', async () => {
  await withDataplane((dp) => {
    const cpus = possibleCpus();
    assert.equal(dp.stats.raw.valueBytes, 16 * cpus);
    dp.stats.fill(3, { packets: 5n, bytes: 100n });
    const per = dp.stats.lookup(3)!;
    assert.equal(per.length, cpus);
    assert.deepEqual(Dataplane.sum(per), { packets: 5n * BigInt(cpus), bytes: 100n * BigInt(cpus) });
  });
});

test('errors carry the errno name, the object and a hint', () => {
  const missing = '/sys/fs/bpf/xdp-dr-no-such-pin';
  assert.throws(() => RawMap.fromPin(missing, 'services'), (e: unknown) => {
    assert.ok(e instanceof BpfError);
    assert.equal(e.code, 'ENOENT');
    assert.match(e.message, /bpf_obj_get \(services at \/sys\/fs\/bpf\/xdp-dr-no-such-pin\) failed: ENOENT/);
    assert.match(e.message, /hint: nothing is pinned there/);
    return true;
  });
});

test('a full map is a clear error and build-time limits come through -D', async () => {
  await withDataplane(
    (dp) => {
      assert.equal(dp.limits.maxServices, 4);
      assert.equal(dp.limits.tableSize, 13);
      // Two epochs' worth of services.
      for (let i = 0; i < 8; i++) dp.services.update({ key: serviceKeyOf(v4(i), 80, 'tcp'), epoch: i & 1 }, { id: i >> 1, flags: 0, table: 0 });
      assert.throws(
        () => dp.services.update({ key: serviceKeyOf(v4(9), 80, 'tcp'), epoch: 0 }, { id: 1, flags: 0, table: 0 }),
        (e: unknown) => e instanceof BpfError && e.code === 'E2BIG' && /map 'services'/.test(e.message) && /the map is full/.test(e.message),
      );
    },
    { build: { MAX_SERVICES: 4, MAGLEV_M: 13 } },
  );
});

test('maps pinned by a build with other limits are refused, and left as they were', async () => {
  await withDataplane((dp) => {
    const key = { key: serviceKeyOf(v4(1), 443, 'tcp'), epoch: 0 };
    dp.services.update(key, { id: 1, flags: 0, table: 2 });
    assert.throws(
      () => Dataplane.load({ pinDir: dp.pinDir, build: { MAX_SERVICES: 8 } }),
      (e: unknown) => e instanceof BpfError && /detach the running load balancer first/.test(e.message) && !!e.libbpfMessage,
    );
    assert.deepEqual(dp.services.lookup(key), { id: 1, flags: 0, table: 2 });
    assert.equal(Dataplane.open(dp.pinDir).services.lookup(key)?.id, 1);
  });
});

test('a non-prime table size is refused before anything is loaded', () => {
  const pinDir = testPinDir();
  try {
    assert.throws(() => Dataplane.load({ pinDir, build: { MAGLEV_M: 15 } }), /table size 15 is not prime/);
    assert.ok(!fs.existsSync(pinDir), 'no pin directory is left behind');
  } finally {
    removePins(pinDir);
  }
});

test('build errors say what to install or what clang said', () => {
  const saved = process.env.PATH;
  process.env.PATH = '/nonexistent';
  try {
    assert.throws(() => ensureObject('xdp_dr', { MAX_BACKENDS: 128 }, true), (e: unknown) => e instanceof BuildError && /clang is not installed: apt-get install clang/.test((e as Error).message));
  } finally {
    process.env.PATH = saved;
  }
  assert.throws(() => ensureObject('no_such_program'), /no BPF source/);
  assert.throws(() => ensureObject('xdp_dr', { MAX_SERVICES: -1 }), /must be an integer/);
  assert.throws(() => ensureObject('xdp_dr', { BOGUS: 1 } as never), /unknown build option BOGUS/);
});

function withVeth<T>(fn: (a: string, b: string) => T): T {
  const a = `xdrA${process.pid % 10000}`;
  const b = `xdrB${process.pid % 10000}`;
  execFileSync('ip', ['link', 'add', a, 'type', 'veth', 'peer', 'name', b]);
  try {
    execFileSync('ip', ['link', 'set', a, 'up']);
    execFileSync('ip', ['link', 'set', b, 'up']);
    return fn(a, b);
  } finally {
    execFileSync('ip', ['link', 'del', a], { stdio: 'ignore' });
  }
}

test('attach through a pinned bpf_link (native and generic), query, detach', async () => {
  await withDataplane((dp) => {
    withVeth((a) => {
      for (const mode of ['native', 'generic'] as const) {
        attachPinned(dp.progFd!, a, mode, dp.pinDir);
        const q = queryXdp(ifindexOf(a), a);
        assert.equal(q.mode, mode);
        assert.ok(q.progId > 0);
        assert.ok(fs.existsSync(path.join(dp.pinDir, LINK_PIN)));
        assert.equal(detachPinned(dp.pinDir, a), true);
        assert.equal(queryXdp(ifindexOf(a), a).mode, 'none');
        assert.equal(detachPinned(dp.pinDir, a), false);
      }
    });
  });
});

test('a failed attach leaves the interface as it was and says why', async () => {
  await withDataplane(async (dp) => {
    await withDataplane((other) => {
      withVeth((a) => {
        attachPinned(dp.progFd!, a, 'native', dp.pinDir);
        const before = queryXdp(ifindexOf(a), a);
        assert.throws(
          () => attachPinned(other.progFd!, a, 'native', other.pinDir),
          (e: unknown) => e instanceof BpfError && /bpf_link_create \(XDP native on interface/.test(e.message) && /another XDP program/.test(e.message),
        );
        assert.deepEqual(queryXdp(ifindexOf(a), a), before);
        assert.equal(fs.existsSync(path.join(other.pinDir, LINK_PIN)), false);
        detachPinned(dp.pinDir, a);
      });
    });
  });
});

test('an unknown interface is named in the error', async () => {
  await withDataplane((dp) => {
    assert.throws(() => attachPinned(dp.progFd!, 'nosuchif0', 'native', dp.pinDir), /unknown interface 'nosuchif0'/);
  });
});
