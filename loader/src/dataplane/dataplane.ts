// The loaded XDP program and its maps, typed. Loading pins every map under one directory (one per interface),
// so a later process (the CLI, a restarted daemon) opens the same state with Dataplane.open().
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  BpfObject, Btf, RawMap, TypedMap, PerCpuMap, u32, u64, fn, check, MAP_TYPE, koffi, attachXdp, detachLink, XdpMode,
} from '../libbpf';
import { MapCreateOpts } from '../libbpf/ffi';
import {
  FAMILY, serviceInfo, serviceSlot, serviceIndexSlot, SERVICE_SLOT_FLAG, ServiceSlot, backendInfo, counter, backendMeta,
  lbInfo, maglevChunk, MAGLEV_CHUNK, serviceEkey, lbEpoch,
  ServiceKey, ServiceInfo, BackendInfo, Counter, BackendMeta, LbInfo, ServiceEkey, LbEpoch,
} from './layout';
import { ConnTable } from './conntable';
import { clockMult, kernelHz } from './clock';
import { createHash } from 'node:crypto';
import { ensureObject, BuildOptions } from './build';
import { isPrime } from '../maglev';

export const BPFFS = '/sys/fs/bpf';
export const PIN_BASE = path.join(BPFFS, 'xdp-dr');
export const PROGRAM = 'xdp_dr';

const MAP_NAMES = [
  'services', 'service_index', 'vip_filter', 'rings', 'backends', 'tx_ports', 'stats', 'service_stats', 'backend_stats',
  'backend_meta', 'lb_info', 'conns', 'events', 'epoch',
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
  /** Both epochs' services; the epoch is part of the key. */
  readonly services: TypedMap<ServiceEkey, ServiceInfo>;
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
  readonly conns: ConnTable;
  /** enum xdp_dr_event -> count (packets field). */
  readonly events: PerCpuMap<number, Counter>;
  /** Slot 0: which half packets read (struct lb_epoch). */
  readonly epoch: TypedMap<number, LbEpoch>;
  readonly limits: Limits;
  /** Global counter slots by name (TX, PASS_NO_SERVICE, ...), from enum xdp_dr_stat in the object's BTF. */
  statIds = new Map<string, number>();
  /** The build's connection-table timeouts in seconds (enum xdp_dr_build), when its BTF is at hand. */
  connTimeouts?: { idle: number; closing: number };

  private constructor(
    readonly pinDir: string,
    private readonly maps: Record<MapName, RawMap>,
    private readonly obj?: BpfObject,
    readonly progFd?: number,
  ) {
    this.services = new TypedMap(maps.services, serviceEkey, serviceInfo);
    this.serviceIndex = new TypedMap(maps.service_index, u32, serviceSlot);
    // The index holds one half per epoch.
    this.serviceIndexBits = Math.log2(maps.service_index.info.maxEntries) - 1;
    this.backends = new TypedMap(maps.backends, u32, backendInfo);
    this.stats = new PerCpuMap(maps.stats, u32, counter);
    this.serviceStats = new PerCpuMap(maps.service_stats, u32, counter);
    this.backendStats = new PerCpuMap(maps.backend_stats, u32, counter);
    this.rings = maps.rings;
    this.txPorts = new TypedMap(maps.tx_ports, u32, u32);
    this.vipFilter = new TypedMap(maps.vip_filter, u32, u64);
    this.backendMeta = new TypedMap(maps.backend_meta, u32, backendMeta);
    this.lbInfo = new TypedMap(maps.lb_info, u32, lbInfo);
    this.conns = new ConnTable(maps.conns, () => this.lbInfo.lookup(0)?.hash_seed ?? 0);
    this.events = new PerCpuMap(maps.events, u32, counter);
    this.epoch = new TypedMap(maps.epoch, u32, lbEpoch);
    this.limits = {
      maxServices: maps.service_stats.info.maxEntries,
      maxBackends: maps.backend_stats.info.maxEntries,
      tableSize: 0,
      maxTxPorts: maps.tx_ports.info.maxEntries,
    };
    if (maps.rings.info.maxEntries !== 2 * this.limits.maxServices || maps.services.info.maxEntries !== 2 * this.limits.maxServices ||
      maps.backends.info.maxEntries !== 2 * this.limits.maxBackends || maps.backend_meta.info.maxEntries !== 2 * this.limits.maxBackends)
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
      obj = BpfObject.open(objPath, { pinRoot: opts.pinDir, constants: { hash_seed: opts.hashSeed ?? 0, clock_mult: clockMult(kernelHz()) } });
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
      dp.connTimeouts = connTimeoutsOf(obj.btf.enumValues('xdp_dr_build'));
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
          dp.connTimeouts = connTimeoutsOf(btf.enumValues('xdp_dr_build'));
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
  }

  /** Which half of the epoch-dependent maps packets read, and whether the other half is free to write. */
  epochState(): LbEpoch {
    const e = this.epoch.lookup(0) ?? { active: 0, quiescent: 1 };
    return { active: e.active & 1, quiescent: e.quiescent };
  }

  /** One write of one aligned word that packets read: the switch between the halves. */
  setEpoch(active: number, quiescent: number): void {
    this.epoch.update(0, { active, quiescent });
  }

  /**
   * Returns once no program run that began before the call is still running (an RCU grace period: XDP programs
   * run inside RCU read-side sections). After a switch, this is what makes the old half free to rewrite.
   */
  waitForReaders(): void {
    // membarrier is refused under nohz_full, and skips the wait on a single CPU (unsafe where softirqs can be
    // preempted, as on PREEMPT_RT); an update of a map-in-map always waits.
    if (os.cpus().length > 1 && membarrierGlobal()) return;
    this.waitByMapUpdate();
  }

  /**
   * waitForReaders' membarrier on a worker thread, so that the caller can plan meanwhile: true once a grace period
   * has passed, false where membarrier cannot wait (then waitForReaders must, by a map write, under the change lock).
   */
  async waitForReadersAsync(): Promise<boolean> {
    return os.cpus().length > 1 && (await membarrierGlobalAsync());
  }

  /** The kernel waits for a grace period in every update of a map-in-map: rewrite a table slot with what it holds. */
  waitByMapUpdate(): void {
    const slot = this.tableSlots()[0];
    if (slot !== undefined) {
      const inner = this.innerMap(slot)!;
      try {
        this.rings.update(u32Key(slot), u32Key(inner.fd));
      } finally {
        inner.close();
      }
      return;
    }
    const spare = this.rings.info.maxEntries - 1;
    this.ensureTables([spare]);
    this.dropTables([spare]);
  }

  /** Index of a backend id in one epoch's half of `backends` and `backend_meta`. */
  backendSlot(id: number, epoch = this.epochState().active): number {
    return epoch * this.limits.maxBackends + id;
  }

  /** The services of one epoch (the active one by default), from the complete list in `services`. */
  servicesOf(epoch = this.epochState().active): [ServiceKey, ServiceInfo][] {
    return this.services.all().filter(([k]) => k.epoch === epoch).map(([k, v]) => [k.key, v]);
  }

  /** The backend records of one epoch's half (nonzero ones), by backend id. */
  backendsOf(epoch = this.epochState().active): { infos: Map<number, BackendInfo>; metas: Map<number, BackendMeta> } {
    const n = this.limits.maxBackends;
    const range = { skipZero: true, first: epoch * n, count: n };
    const half = <V>(all: [number, V][]) => new Map(all.map(([i, v]) => [i - epoch * n, v]));
    return { infos: half(this.backends.all(range)), metas: half(this.backendMeta.all(range)) };
  }

  /**
   * Rewrites one epoch's half of `backends` and `backend_meta` to hold exactly these records. Only for the half
   * packets do not read (after waitForReaders).
   */
  writeBackendHalf(epoch: number, records: Map<number, { info: BackendInfo; meta: BackendMeta }>): void {
    const n = this.limits.maxBackends;
    this.backends.updateRange(epoch * n, n, (i) => records.get(i - epoch * n)?.info);
    this.backendMeta.updateRange(epoch * n, n, (i) => records.get(i - epoch * n)?.meta);
  }

  /**
   * Rewrites one epoch's services: the entries of `services` with that epoch and that half of the index. Only for
   * the half packets do not read (after waitForReaders).
   */
  writeServiceHalf(epoch: number, services: [ServiceKey, ServiceInfo][]): void {
    const bits = this.serviceIndexBits;
    const slots = new Map<number, ServiceSlot>();
    for (const [key, info] of services) {
      const i = serviceIndexSlot(key, bits);
      const cur = slots.get(i);
      slots.set(i, cur ? { ...cur, flags: OVERFLOW } : { key, info, flags: 0 });
    }
    const wanted = new Set(services.map(([k]) => this.services.encodeKey({ key: k, epoch }).toString('hex')));
    const stale = this.services.all().filter(([k]) => k.epoch === epoch && !wanted.has(this.services.encodeKey(k).toString('hex')));
    if (stale.length) this.services.deleteBatch(stale.map(([k]) => k));
    if (services.length) this.services.updateBatch(services.map(([key, info]) => [{ key, epoch }, info]));
    this.serviceIndex.updateRange(epoch << bits, 1 << bits, (i) => slots.get(i - (epoch << bits)));
  }

  /** Sets exactly the bits of these keys in vip_filter (one batch write of the whole filter). */
  writeVipFilter(keys: ServiceKey[]): void {
    const words = vipFilterWords(keys);
    this.vipFilter.updateRange(0, this.vipFilter.raw.info.maxEntries, (w) => words.get(w));
  }

  /** Whether vip_filter has bits that none of these keys needs (left by a change killed or undone part way). */
  vipFilterHasMore(keys: ServiceKey[]): boolean {
    const words = vipFilterWords(keys);
    return this.vipFilter.all({ skipZero: true }).some(([w, bits]) => (bits & ~(words.get(w) ?? 0n)) !== 0n);
  }

  // Direct edits of the active half, one map write at a time: for tests, the benchmark and the fuzzer. The
  // control plane changes state through lb/apply, which writes the other half and switches.

  /** Sets a backend record in the active half. */
  setBackend(id: number, info: BackendInfo): void {
    this.backends.update(this.backendSlot(id), info);
  }

  /** The Maglev table slot the active records of a service id name, if any. */
  private liveTableSlot(serviceId: number): number | undefined {
    return this.servicesOf().find(([, i]) => i.id === serviceId)?.[1].table;
  }

  /**
   * Adds or changes a service in the active half; its VIP's filter bit is set first, so no packet for it is turned
   * away. Without a table slot it keeps the one its id uses, or takes 2 * id.
   */
  putService(key: ServiceKey, info: { id: number; flags: number; table?: number }): void {
    const full: ServiceInfo = { ...info, table: info.table ?? this.liveTableSlot(info.id) ?? 2 * info.id };
    const epoch = this.epochState().active;
    const { word, bit } = vipFilterSlot(key.addr, key.family);
    const bits = this.vipFilter.lookup(word) ?? 0n;
    if (!(bits & bit)) this.vipFilter.update(word, bits | bit);
    // `services` holds every service; the index is written after it, so an OVERFLOW slot always finds it there.
    this.services.update({ key, epoch }, full);
    const slot = (epoch << this.serviceIndexBits) | serviceIndexSlot(key, this.serviceIndexBits);
    const cur = this.serviceIndex.lookup(slot);
    if (!cur || cur.key.family === 0 || sameKey(cur.key, key)) this.serviceIndex.update(slot, { key, info: full, flags: cur?.flags ?? 0 });
    else if (!(cur.flags & OVERFLOW)) this.serviceIndex.update(slot, { ...cur, flags: cur.flags | OVERFLOW });
  }

  /** Removes a service from the active half, then clears its VIP's filter bit unless another service needs it. */
  deleteService(key: ServiceKey): boolean {
    const epoch = this.epochState().active;
    const bits = this.serviceIndexBits;
    const slot = (epoch << bits) | serviceIndexSlot(key, bits);
    const cur = this.serviceIndex.lookup(slot);
    const active = this.servicesOf(epoch);
    const others = active.filter(([k]) => !sameKey(k, key) && serviceIndexSlot(k, bits) === (slot & ((1 << bits) - 1)));
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
    const existed = this.services.delete({ key, epoch });
    const { word, bit } = vipFilterSlot(key.addr, key.family);
    const stillNeeded = this.services.all().some(([k]) => {
      if (sameKey(k.key, key)) return false;
      const other = vipFilterSlot(k.key.addr, k.key.family);
      return other.word === word && other.bit === bit;
    });
    const filter = this.vipFilter.lookup(word) ?? 0n;
    if (!stillNeeded && filter & bit) this.vipFilter.update(word, filter & ~bit);
    return existed;
  }

  /** Ends a throwaway load balancer (tests, benchmark, demo): unpins, closes, removes its pin directory. */
  discard(): void {
    this.unpin();
    this.close();
    removePinDir(this.pinDir);
  }

  /** The Maglev table that packets of a service id read now, or undefined when none is installed. */
  readTable(serviceId: number): Uint32Array | undefined {
    const slot = this.liveTableSlot(serviceId);
    return slot === undefined ? undefined : this.readTableSlot(slot);
  }

  /** The contents of one table slot of `rings`, or undefined when no table is installed there. */
  readTableSlot(slot: number): Uint32Array | undefined {
    const inner = this.innerMap(slot);
    if (!inner) return undefined;
    try {
      return readRing(inner, this.limits.tableSize);
    } finally {
      inner.close();
    }
  }

  /**
   * Puts empty tables into the slots of `rings` that have none, in one batch update (the kernel returns from an
   * update of a map-in-map after an RCU grace period). Returns the slots filled.
   */
  ensureTables(slots: number[]): number[] {
    const missing = [...new Set(slots)].filter((s) => !this.hasTableSlot(s));
    if (!missing.length) return [];
    const maps: RawMap[] = [];
    try {
      for (const s of missing) maps.push(createRing(this.limits.tableSize, s >> 1));
      const keys = Buffer.alloc(4 * missing.length);
      const fds = Buffer.alloc(4 * missing.length);
      missing.forEach((s, i) => {
        keys.writeUInt32LE(s, 4 * i);
        fds.writeUInt32LE(maps[i].fd, 4 * i);
      });
      this.rings.updateBatch(keys, fds);
    } finally {
      for (const m of maps) m.close();
    }
    return missing;
  }

  /** Writes a whole table into a slot's map (which must exist). Only for a slot that no active record names. */
  writeTable(slot: number, table: Uint32Array): void {
    if (table.length !== this.limits.tableSize)
      throw new RangeError(`table has ${table.length} slots, this build's tables have ${this.limits.tableSize}`);
    const inner = this.innerMap(slot);
    if (!inner) throw new Error(`internal: no table map in slot ${slot} of rings`);
    try {
      writeRing(inner, table);
    } finally {
      inner.close();
    }
  }

  /**
   * Makes `table` the one a service id reads, by hand: writes it into the slot its active records do not name,
   * then points those records at it. For tests and tools; a change goes through lb/apply.
   */
  installTable(serviceId: number, table: Uint32Array): void {
    const live = this.liveTableSlot(serviceId);
    const slot = live === undefined ? 2 * serviceId : live ^ 1;
    this.ensureTables([slot]);
    // The slot may have been live a moment ago, in the previous call.
    if (live !== undefined) this.waitForReaders();
    this.writeTable(slot, table);
    for (const [key, info] of this.servicesOf()) if (info.id === serviceId) this.putService(key, { ...info, table: slot });
  }

  hasTableSlot(slot: number): boolean {
    return this.rings.lookup(u32Key(slot)) !== undefined;
  }

  /** Removes the tables of slots; a packet of a service whose table is gone passes to the kernel. */
  dropTables(slots: number[]): void {
    // Map-in-map arrays have no batch delete: one syscall (and grace period) per slot.
    for (const s of slots) this.rings.delete(u32Key(s));
  }

  /** The slots of `rings` that hold a table. */
  tableSlots(): number[] {
    // A batch read of a map-in-map array answers with the slots that hold a map only (kernels before 6.14 stop
    // at the first empty slot with EINTR instead: then one lookup per slot).
    try {
      const { keys, count } = this.rings.lookupAll();
      return Array.from({ length: count }, (_, i) => keys.readUInt32LE(4 * i));
    } catch {
      const out: number[] = [];
      for (let s = 0; s < this.rings.info.maxEntries; s++) if (this.hasTableSlot(s)) out.push(s);
      return out;
    }
  }

  /** Kernel id of the map in a table slot (for tests and diagnostics). */
  tableMapId(slot: number): number | undefined {
    return this.rings.lookup(u32Key(slot))?.readUInt32LE(0);
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

  private innerMap(slot: number): RawMap | undefined {
    const v = this.rings.lookup(u32Key(slot));
    if (!v) return undefined;
    return RawMap.fromId(v.readUInt32LE(0), `rings[${slot}]`);
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
      maxServices: obj.mapDef('service_stats').maxEntries,
      maxBackends: obj.mapDef('backend_stats').maxEntries,
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

function vipFilterWords(keys: ServiceKey[]): Map<number, bigint> {
  const words = new Map<number, bigint>();
  for (const k of keys) {
    const { word, bit } = vipFilterSlot(k.addr, k.family);
    words.set(word, (words.get(word) ?? 0n) | bit);
  }
  return words;
}

/** The vip_filter bit of an address: its low 16 bits, as the program reads them (bpf/xdp_dr.bpf.c maybe_vip). */
export function vipFilterSlot(addr: Buffer, family: number): { word: number; bit: bigint } {
  const end = family === FAMILY.XDP_DR_AF_INET ? 4 : 16;
  const low = addr.readUInt16BE(end - 2);
  return { word: low >> 6, bit: 1n << BigInt(low & 63) };
}

/** XDP_DR_STAT_PASS_NO_SERVICE -> PASS_NO_SERVICE; the _MAX sentinel is not a counter. */
const OVERFLOW = SERVICE_SLOT_FLAG.SERVICE_SLOT_F_OVERFLOW;
// Empty records, decoded from zeros by the BTF-checked codecs rather than spelt out field by field.
const EMPTY_SLOT: ServiceSlot = serviceSlot.decode(Buffer.alloc(serviceSlot.size), 0);
export const ZERO_BACKEND: BackendInfo = backendInfo.decode(Buffer.alloc(backendInfo.size), 0);
export const ZERO_META: BackendMeta = backendMeta.decode(Buffer.alloc(backendMeta.size), 0);

const SYS_MEMBARRIER = process.arch === 'arm64' ? 283 : 324;
const MEMBARRIER_CMD_GLOBAL = 1;

/** membarrier(MEMBARRIER_CMD_GLOBAL): the kernel runs synchronize_rcu() for it. False when refused. */
function membarrierGlobal(): boolean {
  return Number(fn.membarrier(SYS_MEMBARRIER, MEMBARRIER_CMD_GLOBAL, 0, 0)) === 0;
}

/** membarrierGlobal on a worker thread. */
function membarrierGlobalAsync(): Promise<boolean> {
  return new Promise((resolve) =>
    fn.membarrier.async(SYS_MEMBARRIER, MEMBARRIER_CMD_GLOBAL, 0, 0, (err: unknown, r: unknown) => resolve(!err && Number(r) === 0)),
  );
}

function sameKey(a: ServiceKey, b: ServiceKey): boolean {
  return a.port === b.port && a.proto === b.proto && a.family === b.family && a.addr.equals(b.addr);
}

function connTimeoutsOf(build: Map<string, number>): { idle: number; closing: number } | undefined {
  const idle = build.get('XDP_DR_CONN_IDLE_TIMEOUT_S');
  const closing = build.get('XDP_DR_CONN_CLOSING_TIMEOUT_S');
  return idle === undefined || closing === undefined ? undefined : { idle, closing };
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

/** Writes a whole table into a table map: one batch update of every element. */
function writeRing(ring: RawMap, table: Uint32Array): void {
  const n = chunks(table.length);
  const keys = new Uint32Array(n);
  const values = new Uint16Array(n * MAGLEV_CHUNK);
  for (let c = 0; c < n; c++) keys[c] = c;
  for (let s = 0; s < table.length; s++) {
    if (table[s] > 0xffff) throw new RangeError(`backend id ${table[s]} does not fit a 16-bit table slot`);
    values[s] = table[s];
  }
  const asBuf = (a: Uint32Array | Uint16Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
  ring.updateBatch(asBuf(keys), asBuf(values));
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
