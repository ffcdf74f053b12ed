// What a load balancer on one interface is running, read back from its pinned maps alone: services from
// `services`, backends from `backend_meta` + `backends`, the build from `lb_info`. The CLI shows this and
// plans every change against it, so no file or process outside the kernel has to be trusted.
import { Dataplane } from '../dataplane/dataplane';
import {
  BACKEND_FLAG, FAMILY, IPPROTO, SERVICE_FLAG, XDP_DR_MODE, ServiceKey, serviceKeyOf, type BackendInfo, type BackendMeta,
} from '../dataplane/layout';
import { bytesToIp, ipToBytes, macToString } from '../packet';
import type { HashMode, Protocol, XdpMode } from '../config';
import { serviceName } from '../config';

export interface BackendState {
  id: number;
  address: string;
  weight: number;
  mac: string;
  /** The MAC came from the neighbour table rather than from the operator. */
  macResolved: boolean;
  /** Egress interface for XDP_REDIRECT; 0 = out of the ingress interface. */
  ifindex: number;
}

export interface ServiceState {
  id: number;
  vip: string;
  family: 4 | 6;
  port: number;
  protocol: Protocol;
  hash: HashMode;
  connTable: boolean;
  /** Whether a live Maglev table is installed. */
  hasTable: boolean;
  /** The slot of `rings` its table sits in (2 * id or 2 * id + 1). */
  table: number;
  backends: BackendState[];
}

export interface LbState {
  /** The half of the maps this state was read from: the one packets read. */
  epoch: number;
  buildId: string;
  hashSeed: number;
  tableSize: number;
  ifindex: number;
  mode?: XdpMode;
  services: ServiceState[];
  /** Backend records whose service is gone (an interrupted change); the next change clears them. */
  orphanBackends: number[];
  /** The raw backend records as read (nonzero ones), by id: what a change compares with and would restore. */
  records: Map<number, { info?: BackendInfo; meta?: BackendMeta }>;
}

export const MODE_VALUE: Record<XdpMode, number> = {
  native: XDP_DR_MODE.XDP_DR_MODE_NATIVE,
  generic: XDP_DR_MODE.XDP_DR_MODE_GENERIC,
  offload: XDP_DR_MODE.XDP_DR_MODE_OFFLOAD,
};

const PROTOCOL_OF = new Map<number, Protocol>(Object.entries(IPPROTO).map(([k, v]) => [v, k as Protocol]));

/** The address bytes of a service key or backend record (IPv4 fills the first 4 of 16). */
export function addrText(addr: Buffer, family: number): string {
  return bytesToIp(addr.subarray(0, family === FAMILY.XDP_DR_AF_INET ? 4 : 16));
}

export function keyOf(s: { vip: string; port: number; protocol: Protocol }): ServiceKey {
  return serviceKeyOf(ipToBytes(s.vip), s.port, s.protocol);
}

export function readState(dp: Dataplane): LbState {
  const info = dp.lbInfo.lookup(0);
  if (!info) throw new Error(`${dp.pinDir}/lb_info is empty: the pins are incomplete (detach and attach again)`);
  const mode = (Object.keys(MODE_VALUE) as XdpMode[]).find((m) => MODE_VALUE[m] === info.mode);

  const epoch = dp.epochState().active;
  const byId = new Map<number, ServiceState>();
  for (const [key, si] of dp.servicesOf(epoch)) {
    const protocol = PROTOCOL_OF.get(key.proto);
    if (!protocol) continue; // not written by this control plane; shown nowhere, changed never
    byId.set(si.id, {
      id: si.id,
      vip: addrText(key.addr, key.family),
      family: key.family === FAMILY.XDP_DR_AF_INET ? 4 : 6,
      port: key.port,
      protocol,
      hash: si.flags & SERVICE_FLAG.SERVICE_F_HASH_L3 ? 'l3' : 'l4',
      connTable: !!(si.flags & SERVICE_FLAG.SERVICE_F_CONN_TABLE),
      hasTable: dp.hasTableSlot(si.table),
      table: si.table,
      backends: [],
    });
  }

  const orphanBackends: number[] = [];
  const { infos, metas } = dp.backendsOf(epoch);
  const records = new Map<number, { info?: BackendInfo; meta?: BackendMeta }>([...infos].map(([id, info]) => [id, { info }]));
  for (const [id, meta] of metas) {
    records.set(id, { info: infos.get(id), meta });
    if (!(meta.flags & BACKEND_FLAG.BACKEND_F_IN_USE)) continue;
    const svc = byId.get(meta.service_id);
    const be = infos.get(id);
    if (!svc || !be) {
      orphanBackends.push(id);
      continue;
    }
    svc.backends.push({
      id,
      address: addrText(meta.addr, meta.family),
      weight: meta.weight,
      mac: macToString(be.dst_mac),
      macResolved: !!(meta.flags & BACKEND_FLAG.BACKEND_F_MAC_RESOLVED),
      ifindex: be.ifindex,
    });
  }

  const services = [...byId.values()].sort(compareServices);
  for (const s of services) s.backends.sort((a, b) => compareAddresses(a.address, b.address));
  return {
    epoch,
    buildId: info.build_id.toString('hex'),
    hashSeed: info.hash_seed,
    tableSize: info.table_size,
    ifindex: info.ifindex,
    mode,
    services,
    orphanBackends,
    records,
  };
}

/** Numeric address order, IPv4 before IPv6: how ipvsadm -n lists them. */
export function compareAddresses(a: string, b: string): number {
  return Buffer.compare(sortKey(a), sortKey(b));
}

function sortKey(ip: string): Buffer {
  const raw = ipToBytes(ip);
  return Buffer.concat([Buffer.from([raw.length]), raw]);
}

export function compareServices(
  a: { vip: string; port: number; protocol: string },
  b: { vip: string; port: number; protocol: string },
): number {
  return compareAddresses(a.vip, b.vip) || a.port - b.port || a.protocol.localeCompare(b.protocol);
}

export { serviceName };
