// The connection table's clock: the loader must know the kernel's HZ to turn jiffies into seconds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { clockMult, configuredHz, kernelHz, measuredHz } from '../../loader/src/dataplane/clock';

test('HZ measured from jiffies agrees with the configured HZ', (t) => {
  const measured = measuredHz(200);
  const configured = configuredHz();
  t.diagnostic(`measured ${measured}, configured ${configured ?? 'not published'}`);
  if (configured !== undefined) assert.equal(measured, configured);
  assert.equal(kernelHz(), configured ?? measured);
});

test('clock_mult turns jiffies into seconds: an interval of a timeout reads as that many seconds, within one', () => {
  for (const hz of [100, 250, 300, 1000]) {
    const seconds = (jiffies: bigint) => (jiffies * clockMult(hz)) >> 32n;
    for (const uptime of [0n, 86_400n, 10n * 366n * 86_400n]) {
      const at = BigInt(2 ** 32 - 300 * hz) + BigInt(hz) * uptime; // the kernel starts jiffies 300 s before a wrap
      for (const interval of [10n, 900n, 86_400n]) {
        const read = seconds(at + interval * BigInt(hz)) - seconds(at);
        assert.ok(read >= interval - 1n && read <= interval + 1n, `HZ ${hz}, uptime ${uptime} s: ${interval} s read as ${read}`);
      }
    }
  }
});
