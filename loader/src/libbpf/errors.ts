// Every libbpf failure becomes a BpfError: which operation, on what, the errno name, libbpf's own words, and what to do.
import os from 'node:os';
import { recentLibbpfMessages } from './print';

const ERRNO_NAME = new Map<number, string>(
  Object.entries(os.constants.errno).map(([name, num]) => [num as number, name]),
);

// Kernel-internal codes that reach user space from BPF syscalls but are not in libc's table.
const KERNEL_ERRNO: Record<number, string> = { 524: 'ENOTSUPP (operation not supported for this map or program type)' };

export function errnoName(errno: number): string {
  const n = Math.abs(errno);
  return ERRNO_NAME.get(n) ?? KERNEL_ERRNO[n] ?? `errno ${n}`;
}

export interface BpfErrorInfo {
  op: string;               // e.g. 'bpf_map_update_elem'
  errno: number;            // positive
  object?: string;          // e.g. "map 'services'", "interface eth0"
  hint?: string;
  libbpfMessage?: string;
}

export class BpfError extends Error {
  readonly op: string;
  readonly errno: number;
  readonly code: string;
  readonly object?: string;
  readonly hint?: string;
  readonly libbpfMessage?: string;

  constructor(info: BpfErrorInfo) {
    const code = errnoName(info.errno);
    const what = info.object ? ` (${info.object})` : '';
    // libbpf starts most of its lines with "libbpf: " already.
    const said = info.libbpfMessage
      ? '\n' + info.libbpfMessage.split('\n').map((l) => `  ${l.startsWith('libbpf: ') ? l : `libbpf: ${l}`}`).join('\n')
      : '';
    const hint = info.hint ? `\n  hint: ${info.hint}` : '';
    super(`${info.op}${what} failed: ${code} (${describe(info.errno)})${said}${hint}`);
    this.name = 'BpfError';
    this.op = info.op;
    this.errno = Math.abs(info.errno);
    this.code = code;
    this.object = info.object;
    this.hint = info.hint;
    this.libbpfMessage = info.libbpfMessage;
  }
}

function describe(errno: number): string {
  const messages: Record<string, string> = {
    EPERM: 'operation not permitted',
    EACCES: 'permission denied',
    ENOENT: 'no such file or entry',
    EEXIST: 'already exists',
    EINVAL: 'invalid argument',
    E2BIG: 'too big: the map is full or the value is too large',
    ENOSPC: 'no space left',
    ENODEV: 'no such device',
    EOPNOTSUPP: 'operation not supported',
    ENOTSUP: 'operation not supported',
    EBUSY: 'device or resource busy',
    ENOMEM: 'out of memory',
    EBADF: 'bad file descriptor',
    ENOTDIR: 'not a directory',
    ENOSYS: 'not implemented by this kernel',
  };
  return messages[errnoName(errno)] ?? 'see errno';
}

// Hints for the failures an operator meets first; specific callers add sharper ones.
export function defaultHint(op: string, errno: number): string | undefined {
  const name = errnoName(errno);
  if (name === 'EPERM' || name === 'EACCES')
    return 'BPF needs root (or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON): run as root';
  if (op.startsWith('bpf_obj_') && name === 'ENOENT') return 'nothing is pinned there: is the load balancer attached?';
  if (op.startsWith('bpf_obj_pin') && name === 'EPERM')
    return 'is bpffs mounted at /sys/fs/bpf? mount it with: mount -t bpf bpf /sys/fs/bpf';
  if (name === 'E2BIG' && op.includes('update')) return 'the map is full: raise the build-time limit or remove entries';
  return undefined;
}

// libbpf 1.x returns -errno from int functions and sets errno for pointer ones.
export function check(ret: number, op: string, object?: string, hint?: string): number {
  if (ret >= 0) return ret;
  throw new BpfError({
    op,
    errno: -ret,
    object,
    hint: hint ?? defaultHint(op, -ret),
    libbpfMessage: recentLibbpfMessages(),
  });
}
