// XDP attachment through bpf_link: the link is pinned so that it outlives this process, and removing the
// pin (with no other holder) is what detaches the program.
import { fn, koffi, LinkCreateOpts, LinkUpdateOpts, XdpQueryOpts, BPF_XDP, XDP_FLAGS, XDP_ATTACHED } from './ffi';
import { BpfError } from './errors';
import { recentLibbpfMessages } from './print';

export type XdpMode = 'native' | 'generic' | 'offload';

const MODE_FLAGS: Record<XdpMode, number> = {
  native: XDP_FLAGS.DRV_MODE,
  generic: XDP_FLAGS.SKB_MODE,
  offload: XDP_FLAGS.HW_MODE,
};

export function ifindexOf(iface: string): number {
  const idx = fn.if_nametoindex(iface);
  if (!idx) throw new Error(`unknown interface '${iface}': check the name with 'ip link'`);
  return idx;
}

export interface XdpState {
  /** The program id attached in each mode, 0 when none. */
  progId: number;
  driver: number;
  generic: number;
  offload: number;
  mode: 'none' | 'native' | 'generic' | 'offload' | 'multi';
}

export function queryXdp(ifindex: number, iface = `ifindex ${ifindex}`): XdpState {
  const opts = { sz: koffi.sizeof(XdpQueryOpts), prog_id: 0, drv_prog_id: 0, hw_prog_id: 0, skb_prog_id: 0, attach_mode: 0 };
  const ret = fn.bpf_xdp_query(ifindex, 0, opts);
  if (ret < 0)
    throw new BpfError({ op: 'bpf_xdp_query', errno: -ret, object: `interface ${iface}`, libbpfMessage: recentLibbpfMessages() });
  const modes: Record<number, XdpState['mode']> = {
    [XDP_ATTACHED.NONE]: 'none', [XDP_ATTACHED.DRV]: 'native', [XDP_ATTACHED.SKB]: 'generic',
    [XDP_ATTACHED.HW]: 'offload', [XDP_ATTACHED.MULTI]: 'multi',
  };
  return {
    progId: opts.prog_id,
    driver: opts.drv_prog_id,
    generic: opts.skb_prog_id,
    offload: opts.hw_prog_id,
    mode: modes[opts.attach_mode] ?? 'none',
  };
}

function attachHint(errno: number, mode: XdpMode, iface: string, state?: XdpState): string | undefined {
  const name = { 1: 'EPERM', 16: 'EBUSY', 17: 'EEXIST', 22: 'EINVAL', 95: 'EOPNOTSUPP', 19: 'ENODEV' }[errno];
  if (name === 'EPERM') return 'attaching XDP needs root (CAP_NET_ADMIN and CAP_BPF)';
  if (name === 'EBUSY' || name === 'EEXIST')
    return `another XDP program (id ${state?.progId ?? '?'}, ${state?.mode ?? '?'} mode) is attached to ${iface}: ` +
      `remove it first (e.g. 'ip link set dev ${iface} xdp off') or detach the other tool`;
  if ((name === 'EOPNOTSUPP' || name === 'EINVAL') && mode === 'native')
    return `the driver of ${iface} has no native XDP: use --mode generic (slower, but works on any interface)`;
  if ((name === 'EOPNOTSUPP' || name === 'EINVAL') && mode === 'offload')
    return `${iface} cannot offload XDP programs: use --mode native`;
  if (name === 'ENODEV') return `interface ${iface} went away`;
  return undefined;
}

/** Creates an XDP bpf_link; returns its fd. On failure the interface is left as it was. */
export function attachXdp(progFd: number, iface: string, mode: XdpMode): number {
  const ifindex = ifindexOf(iface);
  const opts = { sz: koffi.sizeof(LinkCreateOpts), flags: MODE_FLAGS[mode], _rest: new Array(52).fill(0) };
  const fd = fn.bpf_link_create(progFd, ifindex, BPF_XDP, opts);
  if (fd < 0) {
    let state: XdpState | undefined;
    try {
      state = queryXdp(ifindex, iface);
    } catch {
      state = undefined;
    }
    throw new BpfError({
      op: 'bpf_link_create',
      errno: -fd,
      object: `XDP ${mode} on interface ${iface}`,
      hint: attachHint(-fd, mode, iface, state),
      libbpfMessage: recentLibbpfMessages(),
    });
  }
  return fd;
}

/** Swaps the program behind an existing link atomically: no packet sees the interface without a program. */
export function replaceLinkProgram(linkFd: number, newProgFd: number, what: string): void {
  const ret = fn.bpf_link_update(linkFd, newProgFd, { sz: koffi.sizeof(LinkUpdateOpts), flags: 0, old_prog_fd: 0 });
  if (ret < 0) throw new BpfError({ op: 'bpf_link_update', errno: -ret, object: what, libbpfMessage: recentLibbpfMessages() });
}

export function detachLink(linkFd: number, what: string): void {
  const ret = fn.bpf_link_detach(linkFd);
  if (ret < 0) throw new BpfError({ op: 'bpf_link_detach', errno: -ret, object: what, libbpfMessage: recentLibbpfMessages() });
}
