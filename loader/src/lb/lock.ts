// One change at a time on this host. A change plans against the half of the maps that packets read and writes
// the other one; a second writer in between would write a half that the first has made live, or plan against a
// state that is gone. So every process that changes a load balancer (CLI, daemon) holds an exclusive flock on the
// pin base directory from reading the state to the end of its writes. The kernel drops it when the process dies.
import fs from 'node:fs';
import { fn } from '../libbpf/ffi';
import { ensureBpffs } from '../dataplane/dataplane';
import { UsageError } from '../errors';
import { pinBase } from './instance';

const LOCK_EX = 2;
const LOCK_NB = 4;

export async function withChangeLock<T>(work: () => Promise<T> | T, opts: { timeoutMs?: number } = {}): Promise<T> {
  ensureBpffs();
  const dir = pinBase();
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  for (;;) {
    let fd: number;
    try {
      fs.mkdirSync(dir, { recursive: true });
      fd = fs.openSync(dir, 'r');
    } catch (e) {
      // A detach removed the directory between the two calls: make it again.
      if ((e as NodeJS.ErrnoException).code === 'ENOENT' && Date.now() <= deadline) continue;
      throw e;
    }
    try {
      // Polled, not blocking: the daemon's event loop keeps serving health checks and metrics meanwhile.
      while (fn.flock(fd, LOCK_EX | LOCK_NB) !== 0) {
        if (Date.now() > deadline)
          throw new UsageError(`another xdp-dr process is changing the load balancers under ${dir} and holds them; try again when it is done`);
        await new Promise((r) => setTimeout(r, 10));
      }
      // Detaching the last load balancer removes the directory: a lock on the one that was removed would exclude
      // nobody who opens the new one. Lock the directory that is there now.
      if (!sameDirectory(fd, dir)) continue;
      return await work();
    } finally {
      fs.closeSync(fd); // closing the descriptor releases the lock
    }
  }
}

function sameDirectory(fd: number, dir: string): boolean {
  try {
    const now = fs.statSync(dir);
    const held = fs.fstatSync(fd);
    return now.ino === held.ino && now.dev === held.dev;
  } catch {
    return false;
  }
}
