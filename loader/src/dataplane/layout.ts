// TypeScript views of the structs in bpf/xdp_dr_kern_user.h. test/bpf/layout.test.ts holds each of them
// against the BTF of the compiled object, so a change on one side alone fails the tests.
import { struct, array, bytes, be16, u8, u16, u32, u64 } from '../libbpf/codec';

export const serviceKey = struct('service_key', [
  ['addr', bytes(16)],
  ['port', be16],
  ['proto', u8],
  ['family', u8],
] as const);

export const serviceInfo = struct('service_info', [
  ['id', u32],
  ['flags', u32],
  ['table', u32],
] as const);

export const serviceEkey = struct('service_ekey', [
  ['key', serviceKey],
  ['epoch', u32],
] as const);

export const lbEpoch = struct('lb_epoch', [
  ['active', u32],
  ['quiescent', u32],
] as const);

export const serviceSlot = struct('service_slot', [
  ['key', serviceKey],
  ['info', serviceInfo],
  ['flags', u32],
] as const);

export const backendInfo = struct('backend_info', [
  ['dst_mac', bytes(6)],
  ['src_mac', bytes(6)],
  ['ifindex', u32],
  ['gen', u32],
] as const);

export const connKey = struct('conn_key', [
  ['src', bytes(16)],
  ['dst', bytes(16)],
  ['sport', be16],
  ['dport', be16],
  ['proto', u8],
  ['family', u8],
  ['reserved', u16],
] as const);

export const connValue = struct('conn_value', [
  ['backend', u32],
  ['gen', u32],
  ['service', u32],
  ['seen', u32],
  ['state', u32],
] as const);

export const connEntry = struct('conn_entry', [
  ['key', connKey],
  ['value', connValue],
  ['check', u32],
] as const);

/** Records in a bucket of the connection table (CONN_WAYS, checked against BTF). */
export const CONN_WAYS = 4;
export const connBucket = struct('conn_bucket', [['way', array(connEntry, CONN_WAYS)]] as const);

export const counter = struct('counter', [
  ['packets', u64],
  ['bytes', u64],
] as const);

export const backendMeta = struct('backend_meta', [
  ['addr', bytes(16)],
  ['service_id', u32],
  ['weight', u32],
  ['family', u8],
  ['flags', u8],
  ['reserved', u16],
] as const);

export const lbInfo = struct('lb_info', [
  ['build_id', bytes(32)],
  ['hash_seed', u32],
  ['table_size', u32],
  ['ifindex', u32],
  ['mode', u32],
] as const);

/** Slots per element of a Maglev table map: 32 16-bit backend ids (enum xdp_dr_build, checked against BTF). */
export const MAGLEV_CHUNK = 32;
export const maglevChunk = struct('maglev_chunk', [['backend', bytes(2 * MAGLEV_CHUNK)]] as const);

export const STRUCTS = [serviceKey, serviceInfo, serviceEkey, lbEpoch, serviceSlot, backendInfo, counter, backendMeta, lbInfo, maglevChunk, connKey, connValue, connEntry, connBucket];

export type ServiceKey = ReturnType<typeof serviceKey.decode>;
export type ServiceInfo = ReturnType<typeof serviceInfo.decode>;
export type ServiceEkey = ReturnType<typeof serviceEkey.decode>;
export type LbEpoch = ReturnType<typeof lbEpoch.decode>;
export type ServiceSlot = ReturnType<typeof serviceSlot.decode>;
export type BackendInfo = ReturnType<typeof backendInfo.decode>;
export type Counter = ReturnType<typeof counter.decode>;
export type BackendMeta = ReturnType<typeof backendMeta.decode>;
export type LbInfo = ReturnType<typeof lbInfo.decode>;
export type ConnKey = ReturnType<typeof connKey.decode>;
export type ConnValue = ReturnType<typeof connValue.decode>;
export type ConnBucket = ReturnType<typeof connBucket.decode>;

/** Values of enum xdp_dr_family and enum service_flag, checked against BTF like the structs. */
export const FAMILY = { XDP_DR_AF_INET: 4, XDP_DR_AF_INET6: 6 } as const;
export const SERVICE_FLAG = { SERVICE_F_HASH_L3: 1, SERVICE_F_CONN_TABLE: 2 } as const;
export const CONN_STATE = { CONN_OPEN: 0, CONN_CLOSING: 1 } as const;
/** Slots of the events map (enum xdp_dr_event). */
export const XDP_DR_EVENT = {
  XDP_DR_EV_CONN_HIT: 0, XDP_DR_EV_CONN_NEW: 1, XDP_DR_EV_ICMP_ROUTED: 2, XDP_DR_EV_CONN_EVICTED: 3, XDP_DR_EV_MAX: 4,
} as const;
export const SERVICE_SLOT_FLAG = { SERVICE_SLOT_F_OVERFLOW: 1 } as const;

/** Slot of a service key in the service index: service_index_slot in bpf/hash.h, on the key's bytes as the program
 * loads them (little-endian words, the port in network order). */
export function serviceIndexSlot(key: ServiceKey, bits: number): number {
  const a = key.addr;
  let h = a.readUInt32LE(0) ^ a.readUInt32LE(4) ^ a.readUInt32LE(8) ^ a.readUInt32LE(12);
  const portLoaded = ((key.port & 0xff) << 8) | (key.port >>> 8);
  h ^= (portLoaded << 16) ^ (key.proto << 8) ^ key.family;
  return Math.imul(h >>> 0, 0x9e3779b1) >>> (32 - bits);
}
export const BACKEND_FLAG = { BACKEND_F_IN_USE: 1, BACKEND_F_MAC_RESOLVED: 2 } as const;
export const XDP_DR_MODE = { XDP_DR_MODE_NATIVE: 1, XDP_DR_MODE_GENERIC: 2, XDP_DR_MODE_OFFLOAD: 3 } as const;
export const IPPROTO = { tcp: 6, udp: 17 } as const;

/** The service key of VIP:port/proto; IPv4 addresses fill the first 4 bytes, the rest stays zero. */
export function serviceKeyOf(vipBytes: Buffer, port: number, proto: keyof typeof IPPROTO): ServiceKey {
  const addr = Buffer.alloc(16);
  vipBytes.copy(addr);
  return {
    addr,
    port,
    proto: IPPROTO[proto],
    family: vipBytes.length === 4 ? FAMILY.XDP_DR_AF_INET : FAMILY.XDP_DR_AF_INET6,
  };
}
