// The loaded XDP program and its maps, typed. Loading pins every map under one directory (one per interface),
// so a later process (the CLI, a restarted daemon) opens the same state with Dataplane.open().
import fs from 'node:fs';
import path from 'node:path';
import {
  BpfObject, Btf, RawMap, TypedMap, PerCpuMap, u32, u64, fn, check, MAP_TYPE, koffi, attachXdp, detachLink, XdpMode,
} from '../libbpf';
import { MapCreateOpts } from '../libbpf/ffi';
import {
  FAMILY, serviceKey, serviceInfo, backendInfo, counter, backendMeta, lbInfo,
  ServiceKey, ServiceInfo, BackendInfo, Counter, BackendMeta, LbInfo,
} from './layout';
import { createHash } from 'node:crypto';
import { ensureObject, BuildOptions } from './build';
import { diffTables, isPrime } from '../maglev';

export const BPFFS = '/sys/fs/bpf';
export const PIN_BASE = path.join(BPFFS, 'xdp-dr');
export const PROGRAM = 'xdp_dr';

const MAP_NAMES = [
  'services', 'vip_filter', 'rings', 'rings_standby', 'backends', 'tx_ports', 'stats', 'service_stats', 'backend_stats',
  'backend_meta', 'lb_info',
] as const;
/** The program is pinned beside its maps so that any process can test-run exactly what the interface runs. */
export const PROG_PIN = 'prog';
type MapName = (typeof MAP_NAMES)[number];

export interface Limits {
  maxServices: number;
  maxBackends: number;
  tableSize: number;
  maxTxPorts: number;
}

export interface LoadOptions {
  /** Where the maps are pinned (created if needed); compatible pins already there are reused. */
  pinDir: string;
  hashSeed?: number;
  build?: BuildOptions;
  /** Use this object instead of building one. */
  objectPath?: string;
}

/** Mounts bpffs at /sys/fs/bpf when it is not mounted: pins cannot exist without it. */
export function ensureBpffs(): void {
  const mounts = fs.readFileSync('/proc/mounts', 'utf8');
  if (mounts.split('\n').some((l) => l.split(' ')[1] === BPFFS && l.split(' ')[2] === 'bpf')) return;
  const { execFileSync } = require('node:child_process') as typeof import('node:child_process');
  try {
    execFileSync('mount', ['-t', 'bpf', 'bpf', BPFFS], { stdio: 'pipe' });
  } catch (e) {
    throw new Error(
      `bpffs is not mounted at ${BPFFS} and mounting it failed (${(e as Error).message.split('\n')[0]}): ` +
        `run as root, or mount it yourself: mount -t bpf bpf ${BPFFS}`,
    );
  }
}

export class Dataplane {
  readonly services: TypedMap<ServiceKey, ServiceInfo>;
  readonly backends: TypedMap<number, BackendInfo>;
  readonly stats: PerCpuMap<number, Counter>;
  readonly serviceStats: PerCpuMap<number, Counter>;
  readonly backendStats: PerCpuMap<number, Counter>;
  readonly rings: RawMap;
  readonly ringsStandby: RawMap;
  readonly txPorts: TypedMap<number, number>;
  readonly vipFilter: TypedMap<number, bigint>;
  readonly backendMeta: TypedMap<number, BackendMeta>;
  readonly lbInfo: TypedMap<number, LbInfo>;
  readonly limits: Limits;
  /** Global counter slots by name (TX, PASS_NO_SERVICE, ...), from enum xdp_dr_stat in the object's BTF. */
  statIds = new Map<string, number>();

  private constructor(
    readonly pinDir: string,
    private readonly maps: Record<MapName, RawMap>,
    private readonly obj?: BpfObject,
    readonly progFd?: number,
  ) {
    this.services = new TypedMap(maps.services, serviceKey, serviceInfo);
    this.backends = new TypedMap(maps.backends, u32, backendInfo);
    this.stats = new PerCpuMap(maps.stats, u32, counter);
    this.serviceStats = new PerCpuMap(maps.service_stats, u32, counter);
    this.backendStats = new PerCpuMap(maps.backend_stats, u32, counter);
    this.rings = maps.rings;
    this.ringsStandby = maps.rings_standby;
    this.txPorts = new TypedMap(maps.tx_ports, u32, u32);
    this.vipFilter = new TypedMap(maps.vip_filter, u32, u64);
    this.backendMeta = new TypedMap(maps.backend_meta, u32, backendMeta);
    this.lbInfo = new TypedMap(maps.lb_info, u32, lbInfo);
    this.limits = {
      maxServices: maps.services.info.maxEntries,
      maxBackends: maps.backends.info.maxEntries,
      tableSize: 0,
      maxTxPorts: maps.tx_ports.info.maxEntries,
    };
    if (maps.rings.info.maxEntries !== this.limits.maxServices || maps.service_stats.info.maxEntries !== this.limits.maxServices ||
      maps.backend_meta.info.maxEntries !== this.limits.maxBackends)
      throw new Error(`maps under ${pinDir} disagree on the number of services: they come from different builds`);
  }

  /** Builds if needed, loads the program and pins (or reuses) its maps under pinDir. */
  static load(opts: LoadOptions): Dataplane {
    ensureBpffs();
    const objPath = opts.objectPath ?? ensureObject(PROGRAM, opts.build);
    fs.mkdirSync(opts.pinDir, { recursive: true });
    const obj = BpfObject.open(objPath, { pinRoot: opts.pinDir, constants: { hash_seed: opts.hashSeed ?? 0 } });
    try {
      const tableSize = obj.innerMapDef('rings').maxEntries;
      if (!isPrime(tableSize)) throw new Error(`the object's Maglev table size ${tableSize} is not prime: rebuild with a prime MAGLEV_M`);
      obj.load();
      const maps = Object.fromEntries(MAP_NAMES.map((n) => [n, obj.map(n)])) as Record<MapName, RawMap>;
      const dp = new Dataplane(opts.pinDir, maps, obj, obj.programFd(PROGRAM));
      dp.limits.tableSize = tableSize;
      dp.statIds = statEnum(obj.btf.enumValues('xdp_dr_stat'));
      if (dp.statIds.size !== maps.stats.info.maxEntries)
        throw new Error(`enum xdp_dr_stat has ${dp.statIds.size} counters but the stats map ${maps.stats.info.maxEntries} slots`);
      const prior = dp.lbInfo.lookup(0);
      dp.lbInfo.update(0, {
        build_id: buildId(objPath), hash_seed: opts.hashSeed ?? 0, table_size: tableSize,
        ifindex: prior?.ifindex ?? 0, mode: prior?.mode ?? 0,
      });
      const progPin = path.join(opts.pinDir, PROG_PIN);
      fs.rmSync(progPin, { force: true });
      check(fn.bpf_obj_pin(dp.progFd!, progPin), 'bpf_obj_pin', `program at ${progPin}`);
      return dp;
    } catch (e) {
      obj.close();
      throw e;
    }
  }

  /** Opens the state another process loaded and pinned, with its program when that is pinned too. */
  static open(pinDir: string): Dataplane {
    const maps: Partial<Record<MapName, RawMap>> = {};
    let progFd: number | undefined;
    try {
      for (const n of MAP_NAMES) maps[n] = RawMap.fromPin(path.join(pinDir, n), n);
      const progPin = path.join(pinDir, PROG_PIN);
      if (fs.existsSync(progPin)) progFd = check(fn.bpf_obj_get(progPin), 'bpf_obj_get', `program at ${progPin}`);
      const dp = new Dataplane(pinDir, maps as Record<MapName, RawMap>, undefined, progFd);
      const info = dp.lbInfo.lookup(0);
      if (!info || !isPrime(info.table_size))
        throw new Error(`${pinDir}/lb_info does not name a Maglev table size: the pins are incomplete (detach and attach again)`);
      dp.limits.tableSize = info.table_size;
      // Counter names as the running program defines them, from the BTF the kernel keeps with its maps.
      if (maps.stats!.info.btfId) {
        const btf = Btf.fromKernel(maps.stats!.info.btfId);
        try {
          dp.statIds = statEnum(btf.enumValues('xdp_dr_stat'));
        } finally {
          btf.close();
        }
      }
      return dp;
    } catch (e) {
      for (const m of Object.values(maps)) m?.close();
      if (progFd !== undefined) fn.close(progFd);
      throw e;
    }
  }

  private closed = false;

  /** Idempotent: error paths may close before the owner's finally does. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const m of Object.values(this.maps)) m.close();
    if (this.obj) this.obj.close();
    else if (this.progFd !== undefined) fn.close(this.progFd);
  }

  /** Removes the map and program pins (they live on while a link or process still holds them). */
  unpin(): void {
    for (const n of [...MAP_NAMES, PROG_PIN]) fs.rmSync(path.join(this.pinDir, n), { force: true });
  }

  /** Adds or changes a service; its VIP's filter bit is set first, so no packet for it is turned away. */
  putService(key: ServiceKey, info: ServiceInfo): void {
    const { word, bit } = vipFilterSlot(key.addr, key.family);
    const bits = this.vipFilter.lookup(word) ?? 0n;
    if (!(bits & bit)) this.vipFilter.update(word, bits | bit);
    this.services.update(key, info);
  }

  /** Removes a service, then clears its VIP's filter bit unless another service still needs it. */
  deleteService(key: ServiceKey): boolean {
    const existed = this.services.delete(key);
    const { word, bit } = vipFilterSlot(key.addr, key.family);
    const stillNeeded = [...this.services.entries()].some(([k]) => {
      const other = vipFilterSlot(k.addr, k.family);
      return other.word === word && other.bit === bit;
    });
    const bits = this.vipFilter.lookup(word) ?? 0n;
    if (!stillNeeded && bits & bit) this.vipFilter.update(word, bits & ~bit);
    return existed;
  }

  /** Ends a throwaway load balancer (tests, benchmark, demo): unpins, closes, removes its pin directory. */
  discard(): void {
    this.unpin();
    this.close();
    removePinDir(this.pinDir);
  }

  /** The live Maglev table of a service, or undefined when none is installed. */
  readTable(serviceId: number): Uint32Array | undefined {
    const inner = this.innerMap(this.rings, serviceId);
    if (!inner) return undefined;
    try {
      return readRing(inner, this.limits.tableSize);
    } finally {
      inner.close();
    }
  }

  /**
   * Installs a new table for a service atomically: the standby table is brought to the new contents by
   * writing only the slots that differ, then swapped in with one update of the rings slot, so a packet
   * sees the old table or the new one. The old live table becomes the standby for the next change.
   * A new service gets both tables filled, so that its first change is a diff too.
   */
  installTable(serviceId: number, table: Uint32Array): { written: number } {
    if (table.length !== this.limits.tableSize)
      throw new RangeError(`table has ${table.length} slots, this build's tables have ${this.limits.tableSize}`);
    const key = u32Key(serviceId);
    const live = this.innerMap(this.rings, serviceId);
    let standby = this.innerMap(this.ringsStandby, serviceId);
    const fresh: RawMap[] = [];
    try {
      // A standby that is also live (an apply interrupted between its two swaps) must not be written in place.
      if (standby && live && standby.info.id === live.info.id) {
        standby.close();
        standby = undefined;
      }
      let written: number;
      if (!standby) {
        standby = createRing(this.limits.tableSize, serviceId);
        written = writeDiff(standby, new Uint32Array(this.limits.tableSize), table);
      } else {
        written = writeDiff(standby, readRing(standby, this.limits.tableSize), table);
      }
      this.rings.update(key, u32Key(standby.fd));
      let next = live;
      if (!next) {
        next = createRing(this.limits.tableSize, serviceId);
        fresh.push(next);
        writeDiff(next, new Uint32Array(this.limits.tableSize), table);
      }
      this.ringsStandby.update(key, u32Key(next.fd));
      return { written };
    } finally {
      live?.close();
      standby?.close();
      for (const m of fresh) m.close();
    }
  }

  hasTable(serviceId: number): boolean {
    return this.rings.lookup(u32Key(serviceId)) !== undefined;
  }

  /** Drops both tables of a service; its packets then pass to the kernel (counted as no table). */
  removeTables(serviceId: number): void {
    this.rings.delete(u32Key(serviceId));
    this.ringsStandby.delete(u32Key(serviceId));
  }

  /** Sum over CPUs of one counter of a per-CPU map. */
  static sum(values: Counter[] | undefined): Counter {
    const out = { packets: 0n, bytes: 0n };
    for (const v of values ?? []) {
      out.packets += v.packets;
      out.bytes += v.bytes;
    }
    return out;
  }

  private innerMap(outer: RawMap, serviceId: number): RawMap | undefined {
    const v = outer.lookup(u32Key(serviceId));
    if (!v) return undefined;
    return RawMap.fromId(v.readUInt32LE(0), `${outer.label}[${serviceId}]`);
  }
}

/** The capacities of a build, read from its object file without loading it (to check a config first). */
export function objectLimits(objPath: string): Limits {
  const obj = BpfObject.open(objPath);
  try {
    return {
      maxServices: obj.mapDef('services').maxEntries,
      maxBackends: obj.mapDef('backends').maxEntries,
      tableSize: obj.innerMapDef('rings').maxEntries,
      maxTxPorts: obj.mapDef('tx_ports').maxEntries,
    };
  } finally {
    obj.close();
  }
}

/** Identifies a build: two attaches of the same object are the same load balancer. */
export function buildId(objPath: string): Buffer {
  return createHash('sha256').update(fs.readFileSync(objPath)).digest();
}

/** The vip_filter bit of an address: its low 16 bits, as the program reads them (bpf/xdp_dr.bpf.c maybe_vip). */
export function vipFilterSlot(addr: Buffer, family: number): { word: number; bit: bigint } {
  const end = family === FAMILY.XDP_DR_AF_INET ? 4 : 16;
  const low = addr.readUInt16BE(end - 2);
  return { word: low >> 6, bit: 1n << BigInt(low & 63) };
}

/** XDP_DR_STAT_PASS_NO_SERVICE -> PASS_NO_SERVICE; the _MAX sentinel is not a counter. */
export function statEnum(values: Map<string, number>): Map<string, number> {
  const out = new Map<string, number>();
  for (const [name, v] of values) if (name !== 'XDP_DR_STAT_MAX') out.set(name.replace(/^XDP_DR_STAT_/, ''), v);
  return out;
}

function u32Key(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
}

function createRing(size: number, serviceId: number): RawMap {
  const fd = check(
    fn.bpf_map_create(MAP_TYPE.ARRAY, `ring_${serviceId}`.slice(0, 15), 4, 4, size, {
      sz: koffi.sizeof(MapCreateOpts), btf_fd: 0, btf_key_type_id: 0, btf_value_type_id: 0, btf_vmlinux_value_type_id: 0,
      inner_map_fd: 0, map_flags: 0, map_extra: 0, numa_node: 0, map_ifindex: 0,
    }),
    'bpf_map_create',
    `Maglev table of service ${serviceId} (${size} slots)`,
  );
  return new RawMap(fd, `ring_${serviceId}`);
}

function writeDiff(ring: RawMap, current: Uint32Array, wanted: Uint32Array): number {
  const { slots, ids } = diffTables(current, wanted);
  ring.updateBatch(Buffer.from(slots.buffer, slots.byteOffset, slots.byteLength), Buffer.from(ids.buffer, ids.byteOffset, ids.byteLength));
  return slots.length;
}

function readRing(ring: RawMap, size: number): Uint32Array {
  const { keys, values, count } = ring.lookupAll(size);
  const out = new Uint32Array(size);
  for (let i = 0; i < count; i++) out[keys.readUInt32LE(i * 4)] = values.readUInt32LE(i * 4);
  return out;
}

export const LINK_PIN = 'link';

/** Removes a pin directory, and its parent (the base directory) when no other load balancer uses it. */
export function removePinDir(pinDir: string): void {
  fs.rmSync(pinDir, { recursive: true, force: true });
  try {
    if (path.dirname(pinDir) !== BPFFS) fs.rmdirSync(path.dirname(pinDir));
  } catch {
    /* still in use, or gone */
  }
}

/**
 * Attaches the program to an interface through a bpf_link pinned at <pinDir>/link, so the program stays
 * attached after this process exits. On any failure the interface is left as it was.
 */
export function attachPinned(progFd: number, iface: string, mode: XdpMode, pinDir: string): void {
  ensureBpffs();
  const pin = path.join(pinDir, LINK_PIN);
  if (fs.existsSync(pin)) throw new Error(`${pin} already exists: ${iface} is attached already (xdp-dr detach ${iface} first)`);
  const linkFd = attachXdp(progFd, iface, mode);
  try {
    check(fn.bpf_obj_pin(linkFd, pin), 'bpf_obj_pin', `XDP link of ${iface} at ${pin}`);
  } catch (e) {
    // Closing the only reference to the unpinned link detaches it again.
    fn.close(linkFd);
    throw e;
  }
  fn.close(linkFd);
}

/** Detaches the program by its pinned link and removes the pin; false when nothing was pinned. */
export function detachPinned(pinDir: string, iface: string): boolean {
  const pin = path.join(pinDir, LINK_PIN);
  if (!fs.existsSync(pin)) return false;
  const fd = check(fn.bpf_obj_get(pin), 'bpf_obj_get', `XDP link of ${iface} at ${pin}`);
  try {
    detachLink(fd, `XDP link of ${iface}`);
  } finally {
    fn.close(fd);
  }
  fs.rmSync(pin);
  return true;
}
