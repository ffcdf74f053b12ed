// A scratch network namespace for the live benchmark: created with iproute2, entered by this thread with setns(2)
// so that interface names, attachments and test runs all resolve inside it, and removed whatever happens.
import fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import { fn, CLONE_NEWNET, PR_SET_PDEATHSIG, SIGKILL } from '../libbpf/ffi';

export const RUN_NETNS = '/run/netns';

function ip(args: string[]): string {
  try {
    return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: string };
    if (err.code === 'ENOENT') throw new Error("the live benchmark needs iproute2 ('ip'): apt-get install iproute2");
    throw new Error(`ip ${args.join(' ')} failed: ${String(err.stderr ?? err.message).trim()}`);
  }
}

export class ScratchNetns {
  private home = -1;

  private constructor(readonly name: string) {}

  static create(name: string): ScratchNetns {
    deleteNetns(name);
    ip(['netns', 'add', name]);
    return new ScratchNetns(name);
  }

  get path(): string {
    return `${RUN_NETNS}/${this.name}`;
  }

  ip(...args: string[]): string {
    return ip(['-n', this.name, ...args]);
  }

  /** Moves the calling thread (Node's main thread: where libbpf and child processes are started) into it. */
  enter(): void {
    if (this.home >= 0) return;
    this.home = fs.openSync('/proc/thread-self/ns/net', 'r');
    setns(this.path);
  }

  leave(): void {
    if (this.home < 0) return;
    try {
      if (fn.setns(this.home, CLONE_NEWNET) !== 0) throw new Error('setns back to the original network namespace failed');
    } finally {
      fs.closeSync(this.home);
      this.home = -1;
    }
  }

  remove(): void {
    this.leave();
    deleteNetns(this.name);
  }
}

/** Deletes a named network namespace if there is one; true if there was. */
export function deleteNetns(name: string): boolean {
  if (!fs.existsSync(`${RUN_NETNS}/${name}`)) return false;
  ip(['netns', 'del', name]);
  return true;
}

/** Joins the namespace at nsPath (a child process entering its parent's scratch namespace). */
export function setns(nsPath: string): void {
  const fd = fs.openSync(nsPath, 'r');
  try {
    if (fn.setns(fd, CLONE_NEWNET) !== 0) throw new Error(`setns into ${nsPath} failed: run as root`);
  } finally {
    fs.closeSync(fd);
  }
}

/** Has the kernel kill this process when the parent that started it ends, however it ends. */
export function dieWithParent(parent: number): void {
  if (fn.prctl(PR_SET_PDEATHSIG, 'unsigned long', SIGKILL) !== 0) throw new Error('prctl(PR_SET_PDEATHSIG) failed');
  // The parent may have ended before the request: then this process has been handed to another.
  if (process.ppid !== parent) process.exit(1);
}

/** Pins the calling thread to one CPU. */
export function pinToCpu(cpu: number): void {
  const mask = Buffer.alloc(128);
  mask[cpu >> 3] |= 1 << (cpu & 7);
  if (fn.sched_setaffinity(0, mask.length, mask) !== 0) throw new Error(`cannot pin to CPU ${cpu}`);
}
