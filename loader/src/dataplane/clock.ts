// The kernel's tick rate (CONFIG_HZ). The program turns jiffies into seconds for the connection table's timeouts
// with a factor the loader gives it (clock_mult), because bpf_jiffies64 costs one load and the other clocks a call.
import fs from 'node:fs';
import os from 'node:os';
import zlib from 'node:zlib';

const COMMON_HZ = [100, 250, 300, 1000];

/** CONFIG_HZ from the kernel's build configuration, when the kernel or /boot publishes it. */
export function configuredHz(): number | undefined {
  const sources: [string, (b: Buffer) => Buffer][] = [
    ['/proc/config.gz', (b) => zlib.gunzipSync(b)],
    [`/boot/config-${os.release()}`, (b) => b],
  ];
  for (const [file, decode] of sources) {
    try {
      const m = /^CONFIG_HZ=(\d+)$/m.exec(decode(fs.readFileSync(file)).toString());
      if (m) return Number(m[1]);
    } catch {
      // Not there on this kernel: try the next source.
    }
  }
  return undefined;
}

function jiffiesNow(): number {
  const m = /^jiffies: (\d+)$/m.exec(fs.readFileSync('/proc/timer_list', 'utf8'));
  if (!m) throw new Error('/proc/timer_list shows no jiffies');
  return Number(m[1]);
}

/** HZ measured: jiffies counted over about ms milliseconds, rounded to the nearest usual value when it is close. */
export function measuredHz(ms = 100): number {
  const t0 = process.hrtime.bigint();
  const j0 = jiffiesNow();
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
  const j1 = jiffiesNow();
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const hz = (j1 - j0) / seconds;
  const near = COMMON_HZ.find((h) => Math.abs(hz - h) / h < 0.1);
  return near ?? Math.round(hz);
}

let cached: number | undefined;

/** The kernel's HZ: from its configuration, else measured (once per process). */
export function kernelHz(): number {
  if (cached === undefined) {
    try {
      cached = configuredHz() ?? measuredHz();
    } catch (e) {
      throw new Error(`cannot tell the kernel's HZ (no /proc/config.gz, /boot/config-${os.release()} or /proc/timer_list): ${(e as Error).message}`);
    }
  }
  return cached;
}

/** The program's clock_mult for a tick rate: 2^32 / HZ, so that (jiffies * mult) >> 32 counts seconds. */
export function clockMult(hz: number): bigint {
  return (1n << 32n) / BigInt(hz);
}

/**
 * Now on the program's clock (seconds of jiffies, as conn_now reads it), from CLOCK_MONOTONIC: the kernel advances
 * jiffies from the monotonic clock, one per tick, from INITIAL_JIFFIES (300 s before the 32-bit wrap). Within a
 * tick or two of the program's own reading: for showing how long ago a record was seen.
 */
export function connClockNow(hz = kernelHz()): number {
  const ticks = BigInt(2 ** 32 - 300 * hz) + (process.hrtime.bigint() * BigInt(hz)) / 1_000_000_000n;
  return Number((ticks * clockMult(hz)) >> 32n);
}
