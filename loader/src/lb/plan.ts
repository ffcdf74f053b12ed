// From what runs to what is wanted: the writes that take one to the other, worked out (and checked) before
// any map is touched. Ids of services and backends that stay are kept, so their counters and Maglev slots
// stay too; new ones get ids nobody used in this change, so a packet that still reads an old table never
// reaches a backend that was just given to someone else.
import { randomBytes } from 'node:crypto';
import { Dataplane, Limits, ZERO_BACKEND, ZERO_META } from '../dataplane/dataplane';
import { BACKEND_FLAG, FAMILY, SERVICE_FLAG, BackendInfo, BackendMeta, ServiceInfo, ServiceKey } from '../dataplane/layout';
import { buildMaglevTable, countChanged } from '../maglev';
import { ipToBytes, macToBytes, macToString } from '../packet';
import type { Service } from '../config';
import { serviceName } from '../config';
import { UsageError } from '../errors';
import { LbState, BackendState, keyOf } from './state';
import type { LinkInfo } from './netif';

export interface MacChoice {
  mac: string;
  /** From the neighbour table, not from the operator. */
  resolved: boolean;
}

export interface PlanInput {
  dp: Dataplane;
  state: LbState;
  /** The interface the program is attached to (frames without a backend interface leave through it). */
  ingress: LinkInfo;
  /** Interfaces named by backends, by name. */
  egress: Map<string, LinkInfo>;
  services: Service[];
  /** The MAC of every real server address the services use. */
  macs: Map<string, MacChoice>;
}

export interface BackendWrite {
  id: number;
  label: string;
  info: BackendInfo;
  meta: BackendMeta;
  fresh: boolean;
  before?: { info: BackendInfo; meta: BackendMeta };
}

export interface ServiceWrite {
  id: number;
  name: string;
  key: ServiceKey;
  info: ServiceInfo;
  fresh: boolean;
  /** Only when the service info changes. */
  infoBefore?: ServiceInfo;
  /** Only when the Maglev table changes. */
  table?: Uint32Array;
  tableBefore?: Uint32Array;
}

export interface ServiceDelete {
  id: number;
  name: string;
  key: ServiceKey;
  info: ServiceInfo;
}

export interface Change {
  op: '+' | '-' | '~';
  kind: 'service' | 'backend';
  name: string;
  detail: string;
}

export interface Plan {
  /** The state planned against: the active half, which the change rewrites into the other one. */
  from: LbState;
  backendWrites: BackendWrite[];
  serviceWrites: ServiceWrite[];
  serviceDeletes: ServiceDelete[];
  backendDeletes: { id: number; label: string; before: { info: BackendInfo; meta: BackendMeta } }[];
  txAdd: number[];
  txRemove: number[];
  changes: Change[];
  /** Per service whose table changes: slots that move, of the table size. */
  disruption: { name: string; slots: number; of: number }[];
}


export function planChange(input: PlanInput): Plan {
  const { dp, state, ingress, egress, services, macs } = input;
  const limits = dp.limits;
  const running = new Map(state.services.map((s) => [serviceName(s), s]));
  const wanted = new Map(services.map((s) => [serviceName(s), s]));
  const plan: Plan = {
    from: state,
    backendWrites: [], serviceWrites: [], serviceDeletes: [], backendDeletes: [], txAdd: [], txRemove: [], changes: [], disruption: [],
  };

  // Ids leaving in this change are not handed out again in it.
  const serviceIds = new IdPool(0, limits.maxServices, 'services', 'MAX_SERVICES');
  const backendIds = new IdPool(1, limits.maxBackends, 'backends', 'MAX_BACKENDS');
  for (const s of state.services) {
    serviceIds.hold(s.id);
    for (const b of s.backends) backendIds.hold(b.id);
  }
  for (const id of state.orphanBackends) backendIds.hold(id);

  // The records readState already read: what each write compares with and what its undo restores.
  const before = (id: number) => ({ info: state.records.get(id)?.info ?? ZERO_BACKEND, meta: state.records.get(id)?.meta ?? ZERO_META });

  for (const [name, cur] of running) {
    if (wanted.has(name)) continue;
    plan.serviceDeletes.push({ id: cur.id, name, key: keyOf(cur), info: serviceInfoOf(cur) });
    plan.changes.push({ op: '-', kind: 'service', name, detail: `${cur.backends.length} backend(s)` });
    for (const b of cur.backends) plan.backendDeletes.push({ id: b.id, label: `${name} -> ${b.address}`, before: before(b.id) });
  }
  for (const id of state.orphanBackends) plan.backendDeletes.push({ id, label: `orphan backend ${id}`, before: before(id) });

  // Kept ids first, so that fresh ones never take an id that is still in use.
  const fresh = (n: number, pool: IdPool): number[] => Array.from({ length: n }, () => pool.take());
  const txWanted = new Set<number>();

  for (const [name, want] of wanted) {
    const cur = running.get(name);
    const id = cur ? cur.id : fresh(1, serviceIds)[0];
    // The table slot is settled below, once it is known whether the table changes.
    const info = serviceInfoOf({ id, ...want, table: cur ? cur.table : 2 * id });
    const sw: ServiceWrite = { id, name, key: keyOf(want), info, fresh: !cur };
    const onOff = (b: boolean) => (b ? 'on' : 'off');
    if (!cur) plan.changes.push({ op: '+', kind: 'service', name, detail: `hash ${want.hash}, conn table ${onOff(want.connTable)}` });
    else if (cur.hash !== want.hash || cur.connTable !== want.connTable) {
      sw.infoBefore = serviceInfoOf(cur);
      const parts = [];
      if (cur.hash !== want.hash) parts.push(`hash ${cur.hash} -> ${want.hash}`);
      if (cur.connTable !== want.connTable) parts.push(`conn table ${onOff(cur.connTable)} -> ${onOff(want.connTable)}`);
      plan.changes.push({ op: '~', kind: 'service', name, detail: parts.join(', ') });
    }

    const curBackends = new Map((cur?.backends ?? []).map((b) => [b.address, b]));
    const members: { id: number; key: string; weight: number }[] = [];
    for (const b of want.backends) {
      const label = `${name} -> ${b.address}`;
      const mac = macs.get(b.address);
      if (!mac) throw new Error(`internal: no MAC chosen for ${b.address}`);
      const out = b.interface && b.interface !== ingress.name ? egress.get(b.interface) : undefined;
      if (b.interface && b.interface !== ingress.name && !out) throw new Error(`internal: interface ${b.interface} not looked up`);
      if (out) txWanted.add(out.ifindex);
      const old = curBackends.get(b.address);
      const bid = old ? old.id : fresh(1, backendIds)[0];
      curBackends.delete(b.address);
      const prevInfo = old ? before(bid).info : undefined;
      const info: BackendInfo = {
        dst_mac: macToBytes(mac.mac),
        src_mac: macToBytes((out ?? ingress).mac),
        ifindex: out ? out.ifindex : 0,
        // Kept for as long as this backend holds the id, so that its recorded flows stay with it.
        gen: prevInfo?.gen || newGen(),
      };
      const addr = Buffer.alloc(16);
      ipToBytes(b.address).copy(addr);
      const meta: BackendMeta = {
        addr, service_id: id, weight: b.weight, family: want.family === 4 ? FAMILY.XDP_DR_AF_INET : FAMILY.XDP_DR_AF_INET6,
        flags: BACKEND_FLAG.BACKEND_F_IN_USE | (mac.resolved ? BACKEND_FLAG.BACKEND_F_MAC_RESOLVED : 0), reserved: 0,
      };
      members.push({ id: bid, key: b.address, weight: b.weight });
      const prev = before(bid);
      const same = old && sameInfo(prev.info, info) && sameMeta(prev.meta, meta);
      if (!same) plan.backendWrites.push({ id: bid, label, info, meta, fresh: !old, before: old ? prev : undefined });
      if (!old) {
        plan.changes.push({ op: '+', kind: 'backend', name: label, detail: describeBackend(b.weight, mac, b.interface) });
      } else if (!same) {
        plan.changes.push({ op: '~', kind: 'backend', name: label, detail: describeEdit(old, prev.info, b.weight, mac, info) });
      }
    }
    for (const gone of curBackends.values()) {
      plan.backendDeletes.push({ id: gone.id, label: `${name} -> ${gone.address}`, before: before(gone.id) });
      plan.changes.push({ op: '-', kind: 'backend', name: `${name} -> ${gone.address}`, detail: `weight ${gone.weight}` });
    }

    if (!cur || !cur.hasTable || !sameMembers(cur.backends, members)) {
      const table = buildMaglevTable(members, limits.tableSize);
      const live = cur?.hasTable ? dp.readTable(id) : undefined;
      const moved = countChanged(live ?? new Uint32Array(limits.tableSize), table);
      if (moved > 0 || !cur?.hasTable) {
        sw.table = table;
        sw.tableBefore = live;
        // Written into the slot packets do not read; the new epoch's record names it.
        if (cur) info.table = cur.table ^ 1;
        if (cur) plan.disruption.push({ name, slots: moved, of: limits.tableSize });
      }
    }
    if (sw.fresh || sw.infoBefore || sw.table) plan.serviceWrites.push(sw);
  }

  const txRunning = new Set([...dp.txPorts.entries()].map(([k]) => k)); // devmaps have no batch lookup
  plan.txAdd = [...txWanted].filter((i) => !txRunning.has(i));
  plan.txRemove = [...txRunning].filter((i) => !txWanted.has(i));
  if (txWanted.size > limits.maxTxPorts)
    throw new UsageError(
      `backends leave through ${txWanted.size} interfaces, but the data plane holds at most ${limits.maxTxPorts} (MAX_TX_PORTS)`,
    );
  return plan;
}

export function planIsEmpty(p: Plan): boolean {
  return !p.backendWrites.length && !p.serviceWrites.length && !p.serviceDeletes.length && !p.backendDeletes.length &&
    !p.txAdd.length && !p.txRemove.length;
}

/** The change as an operator reads it: one line per service or backend, then what moves in each table. */
export function formatPlan(p: Plan): string[] {
  const lines = p.changes.map((c) => `${c.op} ${c.kind.padEnd(7)} ${c.name}${c.detail ? `  (${c.detail})` : ''}`);
  for (const d of p.disruption)
    lines.push(`  table   ${d.name}: ${d.slots} of ${d.of} slots move (${((100 * d.slots) / d.of).toFixed(1)}% of flows)`);
  return lines;
}

/** Nonzero and unpredictable: a recorded flow matches only the backend it was recorded for. */
function newGen(): number {
  return randomBytes(4).readUInt32LE(0) || 1;
}

export function serviceInfoOf(s: { id: number; hash: string; connTable: boolean; table: number }): ServiceInfo {
  return {
    id: s.id,
    table: s.table,
    flags: (s.hash === 'l3' ? SERVICE_FLAG.SERVICE_F_HASH_L3 : 0) | (s.connTable ? SERVICE_FLAG.SERVICE_F_CONN_TABLE : 0),
  };
}

function sameInfo(a: BackendInfo, b: BackendInfo): boolean {
  return a.dst_mac.equals(b.dst_mac) && a.src_mac.equals(b.src_mac) && a.ifindex === b.ifindex && a.gen === b.gen;
}

function sameMeta(a: BackendMeta, b: BackendMeta): boolean {
  return a.addr.equals(b.addr) && a.service_id === b.service_id && a.weight === b.weight && a.family === b.family &&
    a.flags === b.flags;
}

function sameMembers(cur: BackendState[], next: { id: number; key: string; weight: number }[]): boolean {
  const norm = (xs: { id: number; key: string; weight: number }[]) =>
    xs.filter((x) => x.weight > 0).map((x) => `${x.id}/${x.key}/${x.weight}`).sort().join(',');
  return norm(cur.map((b) => ({ id: b.id, key: b.address, weight: b.weight }))) === norm(next);
}

function describeBackend(weight: number, mac: MacChoice, iface?: string): string {
  return `weight ${weight}${weight === 0 ? ' (drained)' : ''}, mac ${mac.mac}${mac.resolved ? ' (neighbour table)' : ''}` +
    (iface ? `, via ${iface}` : '');
}

function describeEdit(old: BackendState, prevInfo: BackendInfo, weight: number, mac: MacChoice, info: BackendInfo): string {
  const parts: string[] = [];
  if (old.weight !== weight) parts.push(`weight ${old.weight} -> ${weight}${weight === 0 ? ' (drained)' : ''}`);
  if (old.mac !== mac.mac) parts.push(`mac ${old.mac} -> ${mac.mac}`);
  if (prevInfo.ifindex !== info.ifindex) parts.push(`egress ifindex ${prevInfo.ifindex || 'ingress'} -> ${info.ifindex || 'ingress'}`);
  if (!prevInfo.src_mac.equals(info.src_mac)) parts.push(`source mac ${macToString(prevInfo.src_mac)} -> ${macToString(info.src_mac)}`);
  if (old.macResolved !== mac.resolved) parts.push(mac.resolved ? 'mac now from the neighbour table' : 'mac now given');
  return parts.join(', ');
}

class IdPool {
  private readonly held = new Set<number>();
  private next: number;

  constructor(
    private readonly first: number,
    private readonly end: number,
    private readonly what: string,
    private readonly limit: string,
  ) {
    this.next = first;
  }

  hold(id: number): void {
    this.held.add(id);
  }

  take(): number {
    while (this.next < this.end && this.held.has(this.next)) this.next++;
    if (this.next >= this.end)
      throw new UsageError(
        `no free id for more ${this.what}: this build holds ${this.end - this.first} (${this.limit}); ` +
          'ids of entries removed in this same change are not reused until the next one, so apply removals first',
      );
    this.held.add(this.next);
    return this.next++;
  }
}

export type { Limits };
