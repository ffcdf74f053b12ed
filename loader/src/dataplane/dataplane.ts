// The loaded XDP program and its maps, typed. Loading pins every map under one directory (one per interface),
// so a later process (the CLI, a restarted daemon) opens the same state with Dataplane.open().
import fs from 'node:fs';
import path from 'node:path';
import {
  BpfObject, Btf, RawMap, TypedMap, PerCpuMap, u32, u64, fn, check, MAP_TYPE, koffi, attachXdp, detachLink, XdpMode,
} from '../libbpf';
import { MapCreateOpts } from '../libbpf/ffi';
import {
  FAMILY, serviceKey, serviceInfo, serviceSlot, serviceIndexSlot, SERVICE_SLOT_FLAG, ServiceSlot, backendInfo, counter, backendMeta,
  lbInfo, maglevChunk, MAGLEV_CHUNK, connKey, connValue,
  ServiceKey, ServiceInfo, BackendInfo, Counter, BackendMeta, LbInfo, ConnKey, ConnValue,
} from './layout';
import { createHash } from 'node:crypto';
import { ensureObject, BuildOptions } from './build';
import { isPrime } from '../maglev';

export const BPFFS = '/sys/fs/bpf';
export const PIN_BASE = path.join(BPFFS, 'xdp-dr');
export const PROGRAM = 'xdp_dr';

const MAP_NAMES = [
  'services', 'service_index', 'vip_filter', 'rings', 'backends', 'tx_ports', 'stats', 'service_stats', 'backend_stats',
  'backend_meta', 'lb_info', 'conns', 'events',
] as const;
/** The program is pinned beside its maps so that any process can test-run exactly what the interface runs. */
export const PROG_PIN = 'prog';
/** Standby Maglev tables, pinned one per service id: no program reads them, and pins cost no grace period. */
export const STANDBY_DIR = 'standby';

export interface StagedTable {
  serviceId: number;
  /** The filled table that swapTables makes live. */
  next: RawMap;
  prevLive?: RawMap;
  table: Uint32Array;
  /** Slots that differed in the standby. */
  written: number;
}
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
  /** The direct-mapped copy of `services` the program looks in first (struct service_slot). */
  readonly serviceIndex: TypedMap<number, ServiceSlot>;
  readonly serviceIndexBits: number;
  readonly backends: TypedMap<number, BackendInfo>;
  readonly stats: PerCpuMap<number, Counter>;
  readonly serviceStats: PerCpuMap<number, Counter>;
  readonly backendStats: PerCpuMap<number, Counter>;
  readonly rings: RawMap;
  readonly txPorts: TypedMap<number, number>;
  readonly vipFilter: TypedMap<number, bigint>;
  readonly backendMeta: TypedMap<number, BackendMeta>;
  readonly lbInfo: TypedMap<number, LbInfo>;
  readonly conns: TypedMap<ConnKey, ConnValue>;
  /** enum xdp_dr_event -> count (packets field). */
  readonly events: PerCpuMap<number, Counter>;
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
    this.serviceIndex = new TypedMap(maps.service_index, u32, serviceSlot);
    this.serviceIndexBits = Math.log2(maps.service_index.info.maxEntries);
    this.backends = new TypedMap(maps.backends, u32, backendInfo);
    this.stats = new PerCpuMap(maps.stats, u32, counter);
    this.serviceStats = new PerCpuMap(maps.service_stats, u32, counter);
    this.backendStats = new PerCpuMap(maps.backend_stats, u32, counter);
    this.rings = maps.rings;
    this.txPorts = new TypedMap(maps.tx_ports, u32, u32);
    this.vipFilter = new TypedMap(maps.vip_filter, u32, u64);
    this.backendMeta = new TypedMap(maps.backend_meta, u32, backendMeta);
    this.lbInfo = new TypedMap(maps.lb_info, u32, lbInfo);
    this.conns = new TypedMap(maps.conns, connKey, connValue);
    this.events = new PerCpuMap(maps.events, u32, counter);
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
    const existed = fs.existsSync(opts.pinDir);
    fs.mkdirSync(opts.pinDir, { recursive: true });
    let obj: BpfObject;
    try {
      obj = BpfObject.open(objPath, { pinRoot: opts.pinDir, constants: { hash_seed: opts.hashSeed ?? 0 } });
    } catch (e) {
      if (!existed) removePinDir(opts.pinDir);
      throw e;
    }
    try {
      const tableSize = tableSizeOf(obj);
      // The kernel marks device maps read-only for programs when it makes them, so libbpf never finds a pinned
      // one equal to the definition: take it over by hand (sizes checked), as a new build taking over must.
      const txPin = path.join(opts.pinDir, 'tx_ports');
      if (fs.existsSync(txPin)) {
        const pinned = RawMap.fromPin(txPin, 'tx_ports');
        try {
          obj.reuseMap('tx_ports', pinned);
        } finally {
          pinned.close();
        }
      }
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
      // libbpf pins maps before it loads the program: a failed load must not leave them behind.
      if (!existed) removePinDir(opts.pinDir);
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

  /**
   * Puts back map and program pins that were removed behind our back, from the fds this process holds (the
   * maps live on while anything holds them). Returns the names re-pinned.
   */
  repairPins(): string[] {
    const fixed: string[] = [];
    fs.mkdirSync(this.pinDir, { recursive: true });
    for (const n of MAP_NAMES) {
      const pin = path.join(this.pinDir, n);
      if (fs.existsSync(pin)) continue;
      check(fn.bpf_obj_pin(this.maps[n].fd, pin), 'bpf_obj_pin', `map ${n} at ${pin}`);
      fixed.push(n);
    }
    const progPin = path.join(this.pinDir, PROG_PIN);
    if (this.progFd !== undefined && !fs.existsSync(progPin)) {
      check(fn.bpf_obj_pin(this.progFd, progPin), 'bpf_obj_pin', `program at ${progPin}`);
      fixed.push(PROG_PIN);
    }
    return fixed;
  }

  /** Removes the map and program pins (they live on while a link or process still holds them). */
  unpin(): void {
    for (const n of [...MAP_NAMES, PROG_PIN]) fs.rmSync(path.join(this.pinDir, n), { force: true });
    fs.rmSync(path.join(this.pinDir, STANDBY_DIR), { recursive: true, force: true });
  }

  /** Adds or changes a service; its VIP's filter bit is set first, so no packet for it is turned away. */
  putService(key: ServiceKey, info: ServiceInfo): void {
    const { word, bit } = vipFilterSlot(key.addr, key.family);
    const bits = this.vipFilter.lookup(word) ?? 0n;
    if (!(bits & bit)) this.vipFilter.update(word, bits | bit);
    // `services` holds every service; the index is written after it, so an OVERFLOW slot always finds it there.
    this.services.update(key, info);
    const slot = serviceIndexSlot(key, this.serviceIndexBits);
    const cur = this.serviceIndex.lookup(slot);
    if (!cur || cur.key.family === 0 || sameKey(cur.key, key)) this.serviceIndex.update(slot, { key, info, flags: cur?.flags ?? 0 });
    else if (!(cur.flags & OVERFLOW)) this.serviceIndex.update(slot, { ...cur, flags: cur.flags | OVERFLOW });
  }

  /** Removes a service, then clears its VIP's filter bit unless another service still needs it. */
  deleteService(key: ServiceKey): boolean {
    const slot = serviceIndexSlot(key, this.serviceIndexBits);
    const cur = this.serviceIndex.lookup(slot);
    const others = [...this.services.entries()].filter(([k]) => !sameKey(k, key) && serviceIndexSlot(k, this.serviceIndexBits) === slot);
    if (cur && cur.key.family !== 0) {
      if (sameKey(cur.key, key)) {
        // A reader may see a slot half written. While the key changes, OVERFLOW stays set in the old and the new
        // value, so a torn key still ends in `services`; it is cleared only once the key is whole.
        if (others.length) {
          const [k, info] = others[0];
          this.serviceIndex.update(slot, { key: k, info, flags: OVERFLOW });
          if (others.length === 1) this.serviceIndex.update(slot, { key: k, info, flags: 0 });
        } else {
          this.serviceIndex.update(slot, EMPTY_SLOT);
        }
      } else if (cur.flags & OVERFLOW && !others.some(([k]) => !sameKey(k, cur.key))) {
        this.serviceIndex.update(slot, { ...cur, flags: cur.flags & ~OVERFLOW });
      }
    }
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
   * Brings the standby table of a service to the new contents, writing only the elements with a changed
   * slot. Packets do not see it until swapTables. The standby is pinned at standby/<id>; one that is also
   * live (a change killed between swap and re-pin) is not written in place but replaced.
   */
  stageTable(serviceId: number, table: Uint32Array): StagedTable {
    if (table.length !== this.limits.tableSize)
      throw new RangeError(`table has ${table.length} slots, this build's tables have ${this.limits.tableSize}`);
    const live = this.innerMap(this.rings, serviceId);
    let standby: RawMap | undefined;
    try {
      standby = this.standbyMap(serviceId);
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
      return { serviceId, next: standby, prevLive: live, table, written };
    } catch (e) {
      live?.close();
      standby?.close();
      throw e;
    }
  }

  /**
   * Makes staged tables live with one batch update of `rings`: per service a packet sees the old table or the
   * new one. The kernel returns from an update of a map-in-map only after an RCU grace period, so once it
   * returns no program still reads an old table, and the old tables become the standbys (a new service gets
   * a standby filled as well, so that its first change is a diff too). Takes ownership of the staged maps.
   */
  swapTables(staged: StagedTable[]): void {
    const fresh: RawMap[] = [];
    try {
      if (!staged.length) return;
      const keys = Buffer.alloc(4 * staged.length);
      const fds = Buffer.alloc(4 * staged.length);
      staged.forEach((st, i) => {
        keys.writeUInt32LE(st.serviceId, 4 * i);
        fds.writeUInt32LE(st.next.fd, 4 * i);
      });
      try {
        this.rings.updateBatch(keys, fds);
      } catch (e) {
        // A batch can stop part way: put back what was live before, so the failure changes nothing.
        for (const st of staged) {
          if (st.prevLive) this.rings.update(u32Key(st.serviceId), u32Key(st.prevLive.fd));
          else this.rings.delete(u32Key(st.serviceId));
        }
        throw e;
      }
      for (const st of staged) {
        let standby = st.prevLive;
        if (!standby) {
          standby = createRing(this.limits.tableSize, st.serviceId);
          fresh.push(standby);
          writeDiff(standby, new Uint32Array(this.limits.tableSize), st.table);
        }
        this.pinStandby(st.serviceId, standby);
      }
    } finally {
      for (const st of staged) {
        st.next.close();
        st.prevLive?.close();
      }
      for (const m of fresh) m.close();
    }
  }

  /** One service's table change: stage, then swap. */
  installTable(serviceId: number, table: Uint32Array): { written: number } {
    const st = this.stageTable(serviceId, table);
    this.swapTables([st]);
    return { written: st.written };
  }

  hasTable(serviceId: number): boolean {
    return this.rings.lookup(u32Key(serviceId)) !== undefined;
  }

  /** Drops the tables of services; their packets then pass to the kernel (counted as no table). */
  removeTables(...serviceIds: number[]): void {
    // Map-in-map arrays have no batch delete: one syscall (and grace period) per service.
    for (const id of serviceIds) {
      this.rings.delete(u32Key(id));
      fs.rmSync(this.standbyPin(id), { force: true });
    }
  }

  /** Which maps hold a service's tables (for tests and diagnostics). */
  tableIds(serviceId: number): { live?: number; standby?: number } {
    const live = this.rings.lookup(u32Key(serviceId))?.readUInt32LE(0);
    const sb = this.standbyMap(serviceId);
    const standby = sb?.info.id;
    sb?.close();
    return { live, standby };
  }

  standbyPin(serviceId: number): string {
    return path.join(this.pinDir, STANDBY_DIR, String(serviceId));
  }

  private standbyMap(serviceId: number): RawMap | undefined {
    const pin = this.standbyPin(serviceId);
    return fs.existsSync(pin) ? RawMap.fromPin(pin, `standby table of service ${serviceId}`) : undefined;
  }

  private pinStandby(serviceId: number, map: RawMap): void {
    const pin = this.standbyPin(serviceId);
    fs.mkdirSync(path.dirname(pin), { recursive: true });
    fs.rmSync(pin, { force: true });
    check(fn.bpf_obj_pin(map.fd, pin), 'bpf_obj_pin', `standby table of service ${serviceId} at ${pin}`);
  }

  /** How often an event (enum xdp_dr_event, XDP_DR_EVENT) happened, over all CPUs. */
  eventCount(event: number): number {
    return Number(Dataplane.sum(this.events.lookup(event)).packets);
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

/** MAGLEV_M of a build, from its BTF, checked against the shape of its table maps. */
function tableSizeOf(obj: BpfObject): number {
  const build = obj.btf.enumValues('xdp_dr_build');
  const m = build.get('XDP_DR_MAGLEV_M') ?? 0;
  if (!isPrime(m)) throw new Error(`the object's Maglev table size ${m} is not prime: rebuild with a prime MAGLEV_M`);
  const inner = obj.innerMapDef('rings');
  if (build.get('XDP_DR_MAGLEV_CHUNK') !== MAGLEV_CHUNK || inner.valueSize !== maglevChunk.size || inner.maxEntries !== chunks(m))
    throw new Error(`the object's Maglev tables are not ${chunks(m)} elements of ${MAGLEV_CHUNK} slots: loader and object disagree; rebuild both`);
  return m;
}

const chunks = (tableSize: number): number => Math.ceil(tableSize / MAGLEV_CHUNK);

/** The capacities of a build, read from its object file without loading it (to check a config first). */
export function objectLimits(objPath: string): Limits {
  const obj = BpfObject.open(objPath);
  try {
    return {
      maxServices: obj.mapDef('services').maxEntries,
      maxBackends: obj.mapDef('backends').maxEntries,
      tableSize: tableSizeOf(obj),
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
const OVERFLOW = SERVICE_SLOT_FLAG.SERVICE_SLOT_F_OVERFLOW;
const EMPTY_SLOT: ServiceSlot = { key: { addr: Buffer.alloc(16), port: 0, proto: 0, family: 0 }, info: { id: 0, flags: 0 }, flags: 0 };

function sameKey(a: ServiceKey, b: ServiceKey): boolean {
  return a.port === b.port && a.proto === b.proto && a.family === b.family && a.addr.equals(b.addr);
}

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

/** A Maglev table map like the program's inner maps (the benchmark's reference writes into one too). */
export function createRing(size: number, serviceId: number): RawMap {
  const fd = check(
    fn.bpf_map_create(MAP_TYPE.ARRAY, `ring_${serviceId}`.slice(0, 15), 4, maglevChunk.size, chunks(size), {
      sz: koffi.sizeof(MapCreateOpts), btf_fd: 0, btf_key_type_id: 0, btf_value_type_id: 0, btf_vmlinux_value_type_id: 0,
      inner_map_fd: 0, map_flags: 0, map_extra: 0, numa_node: 0, map_ifindex: 0,
    }),
    'bpf_map_create',
    `Maglev table of service ${serviceId} (${size} slots)`,
  );
  return new RawMap(fd, `ring_${serviceId}`);
}

/**
 * Brings a table map from current to wanted, writing (in one batch) only the elements with a changed slot;
 * returns how many slots changed. One pass over typed arrays: this runs for every table of every change.
 */
function writeDiff(ring: RawMap, current: Uint32Array, wanted: Uint32Array): number {
  const n = chunks(wanted.length);
  const keys = new Uint32Array(n);
  const values = new Uint16Array(n * MAGLEV_CHUNK);
  let dirty = 0;
  let changed = 0;
  for (let c = 0; c < n; c++) {
    const base = c * MAGLEV_CHUNK;
    const end = Math.min(base + MAGLEV_CHUNK, wanted.length);
    let diff = 0;
    for (let s = base; s < end; s++) if (current[s] !== wanted[s]) diff++;
    if (!diff) continue;
    changed += diff;
    keys[dirty] = c;
    for (let s = base; s < end; s++) {
      if (wanted[s] > 0xffff) throw new RangeError(`backend id ${wanted[s]} does not fit a 16-bit table slot`);
      values[dirty * MAGLEV_CHUNK + s - base] = wanted[s];
    }
    dirty++;
  }
  if (dirty) {
    const asBuf = (a: Uint32Array | Uint16Array, bytes: number) => Buffer.from(a.buffer, a.byteOffset, bytes);
    ring.updateBatch(asBuf(keys, 4 * dirty), asBuf(values, maglevChunk.size * dirty));
  }
  return changed;
}

function readRing(ring: RawMap, size: number): Uint32Array {
  const n = chunks(size);
  // Room for one more than the map holds, so that one call reads it all and already sees the end.
  const { keys, values, count } = ring.lookupAll(n + 1);
  const out = new Uint32Array(size);
  // An array map answers with every index in order; then its values are the table itself, widened in one copy.
  if (count === n && values.byteOffset % 2 === 0 && keys.readUInt32LE(0) === 0 && keys.readUInt32LE(4 * (n - 1)) === n - 1) {
    out.set(new Uint16Array(values.buffer, values.byteOffset, size));
    return out;
  }
  const ids = new Uint16Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength));
  for (let i = 0; i < count; i++) {
    const base = keys.readUInt32LE(i * 4) * MAGLEV_CHUNK;
    const end = Math.min(base + MAGLEV_CHUNK, size);
    for (let s = base; s < end; s++) out[s] = ids[i * MAGLEV_CHUNK + s - base];
  }
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
