// Prometheus metrics of a running load balancer (prom-client). Packet and byte counters live in the kernel's
// per-CPU maps; they are read and summed at scrape time, so a scrape shows the data path as it is, with nothing
// cached in between. Names: xdp_dr_ prefix, _total for counters, seconds and bytes as units.
import http from 'node:http';
import os from 'node:os';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { Dataplane } from '../dataplane/dataplane';
import { Counter as KernelCounter, XDP_DR_EVENT } from '../dataplane/layout';
import { readState } from '../lb/state';

export interface BackendHealth {
  vip: string;
  port: number;
  proto: string;
  backend: string;
  up: boolean;
  /** As configured (0 = drained), also while the backend is down and out of the table. */
  weight: number;
}

export interface MetricsSource {
  /** The load balancers to read, by interface. */
  lbs(): { iface: string; dp: Dataplane }[];
  /** Every configured backend, in the table or not. */
  backendHealth(): BackendHealth[];
}

const ZERO: KernelCounter = { packets: 0n, bytes: 0n };
const SERVICE_LABELS = ['interface', 'vip', 'port', 'proto'] as const;
const BACKEND_LABELS = [...SERVICE_LABELS, 'backend'] as const;

export class Metrics {
  readonly registry = new Registry();
  readonly checkDuration: Histogram<string>;
  readonly checkFailures: Counter<string>;
  readonly reloads: Counter<string>;
  readonly changes: Counter<string>;
  readonly slotsWritten: Counter<string>;
  readonly pinRepairs: Counter<string>;
  readonly macChanges: Counter<string>;
  private server?: http.Server;

  constructor(private readonly source: MetricsSource, info: { version: string; build: string }) {
    const r = this.registry;
    const src = this.source;
    // One read of the maps serves all collectors of a scrape (they run back to back).
    let scrape: { at: number; data: Scrape } | undefined;
    const fresh = (): Scrape => {
      if (!scrape || Date.now() - scrape.at > 250) scrape = { at: Date.now(), data: read(src) };
      return scrape.data;
    };
    const healthLabels = ['vip', 'port', 'proto', 'backend'];

    new Gauge({ name: 'xdp_dr_build_info', help: 'Version and build of the running xdp-dr', labelNames: ['version', 'build', 'kernel'], registers: [r] })
      .set({ version: info.version, build: info.build, kernel: os.release() }, 1);

    const kernelCounter = (name: string, help: string, labels: readonly string[], pick: (s: Scrape) => [Record<string, string>, number][]) =>
      new Counter({
        name, help, labelNames: [...labels], registers: [r],
        collect() {
          // Absolute values from the kernel: start from nothing at each scrape.
          this.reset();
          for (const [l, v] of pick(fresh())) this.inc(l, v);
        },
      });
    kernelCounter('xdp_dr_packets_total', 'Packets seen by the XDP program, by outcome (tx, redirect, pass reasons)', ['interface', 'outcome'],
      (s) => s.outcomes.map((o) => [{ interface: o.iface, outcome: o.outcome }, o.packets]));
    kernelCounter('xdp_dr_bytes_total', 'Bytes seen by the XDP program, by outcome', ['interface', 'outcome'],
      (s) => s.outcomes.map((o) => [{ interface: o.iface, outcome: o.outcome }, o.bytes]));
    kernelCounter('xdp_dr_service_packets_total', 'Packets forwarded for a service', SERVICE_LABELS,
      (s) => s.services.map((x) => [x.labels, x.packets]));
    kernelCounter('xdp_dr_service_bytes_total', 'Bytes forwarded for a service', SERVICE_LABELS,
      (s) => s.services.map((x) => [x.labels, x.bytes]));
    kernelCounter('xdp_dr_backend_packets_total', 'Packets forwarded to a backend', BACKEND_LABELS,
      (s) => s.backends.map((x) => [x.labels, x.packets]));
    kernelCounter('xdp_dr_backend_bytes_total', 'Bytes forwarded to a backend', BACKEND_LABELS,
      (s) => s.backends.map((x) => [x.labels, x.bytes]));
    kernelCounter('xdp_dr_conn_table_events_total', 'Connection table: packets that followed a record (hit), records written (new), live records that made room for a new one (evicted: MAX_CONNS is too small)', ['interface', 'event'],
      (s) => s.events.map((e) => [{ interface: e.iface, event: e.event }, e.count]));
    kernelCounter('xdp_dr_icmp_errors_routed_total', 'ICMP errors about a flow (fragmentation needed, ...) sent to that flow\'s backend', ['interface'],
      (s) => s.icmpRouted.map((e) => [{ interface: e.iface }, e.count]));

    const label = (b: BackendHealth) => ({ vip: b.vip, port: String(b.port), proto: b.proto, backend: b.backend });
    new Gauge({
      name: 'xdp_dr_backend_up', help: 'Backend health: 1 up (in the Maglev table), 0 down (taken out by its health check)',
      labelNames: healthLabels, registers: [r],
      collect() {
        this.reset();
        for (const b of src.backendHealth()) this.set(label(b), b.up ? 1 : 0);
      },
    });
    new Gauge({
      name: 'xdp_dr_backend_weight', help: 'Configured weight of a backend (0 = drained)', labelNames: healthLabels, registers: [r],
      collect() {
        this.reset();
        for (const b of src.backendHealth()) this.set(label(b), b.weight);
      },
    });
    new Gauge({
      name: 'xdp_dr_services', help: 'Services installed', labelNames: ['interface'], registers: [r],
      collect() {
        this.reset();
        for (const [iface, n] of fresh().serviceCount) this.set({ interface: iface }, n);
      },
    });

    this.checkDuration = new Histogram({
      name: 'xdp_dr_health_check_duration_seconds', help: 'Duration of health checks', labelNames: ['vip', 'port', 'proto', 'backend'],
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5], registers: [r],
    });
    this.checkFailures = new Counter({
      name: 'xdp_dr_health_check_failures_total', help: 'Failed health checks', labelNames: ['vip', 'port', 'proto', 'backend'], registers: [r],
    });
    this.reloads = new Counter({ name: 'xdp_dr_config_reloads_total', help: 'Config reloads, by result (applied, rejected)', labelNames: ['result'], registers: [r] });
    this.changes = new Counter({
      name: 'xdp_dr_changes_total', help: 'Changes applied to the maps (config or health), by result (applied, failed: rolled back)',
      labelNames: ['result'], registers: [r],
    });
    this.slotsWritten = new Counter({ name: 'xdp_dr_table_slots_written_total', help: 'Maglev table slots written', registers: [r] });
    this.pinRepairs = new Counter({
      name: 'xdp_dr_pin_repairs_total', help: 'Pins found removed from bpffs and put back (or the XDP link re-attached)',
      labelNames: ['interface'], registers: [r],
    });
    this.macChanges = new Counter({
      name: 'xdp_dr_backend_mac_changes_total', help: 'Real-server MACs found changed in the neighbour table and followed',
      labelNames: ['backend'], registers: [r],
    });
  }

  /** Serves /metrics on host:port; resolves once listening. */
  listen(address: string): Promise<string> {
    const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(address);
    if (!m) throw new Error(`metrics address '${address}' must be HOST:PORT, e.g. 127.0.0.1:9642 or [::1]:9642`);
    const host = m[1] ?? m[2];
    const port = Number(m[3]);
    this.server = http.createServer(async (req, res) => {
      if (req.url !== '/metrics') {
        res.writeHead(404).end('see /metrics\n');
        return;
      }
      try {
        const body = await this.registry.metrics();
        res.writeHead(200, { 'content-type': this.registry.contentType }).end(body);
      } catch (e) {
        res.writeHead(500).end(`${(e as Error).message}\n`);
      }
    });
    return new Promise((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(port, host, () => {
        const a = this.server!.address() as { address: string; port: number };
        resolve(`${a.address.includes(':') ? `[${a.address}]` : a.address}:${a.port}`);
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

interface Scrape {
  outcomes: { iface: string; outcome: string; packets: number; bytes: number }[];
  services: { labels: Record<string, string>; packets: number; bytes: number }[];
  backends: { labels: Record<string, string>; packets: number; bytes: number }[];
  events: { iface: string; event: string; count: number }[];
  icmpRouted: { iface: string; count: number }[];
  serviceCount: Map<string, number>;
}

function read(src: MetricsSource): Scrape {
  const out: Scrape = { outcomes: [], services: [], backends: [], events: [], icmpRouted: [], serviceCount: new Map() };
  const sum = (m: Map<number, KernelCounter[]>, id: number) => Dataplane.sum(m.get(id)) ?? ZERO;
  for (const { iface, dp } of src.lbs()) {
    const stats = dp.stats.all();
    for (const [name, id] of dp.statIds) {
      const c = sum(stats, id);
      out.outcomes.push({ iface, outcome: name.toLowerCase(), packets: Number(c.packets), bytes: Number(c.bytes) });
    }
    out.events.push({ iface, event: 'hit', count: dp.eventCount(XDP_DR_EVENT.XDP_DR_EV_CONN_HIT) },
      { iface, event: 'new', count: dp.eventCount(XDP_DR_EVENT.XDP_DR_EV_CONN_NEW) },
      { iface, event: 'evicted', count: dp.eventCount(XDP_DR_EVENT.XDP_DR_EV_CONN_EVICTED) });
    out.icmpRouted.push({ iface, count: dp.eventCount(XDP_DR_EVENT.XDP_DR_EV_ICMP_ROUTED) });
    const st = readState(dp);
    out.serviceCount.set(iface, st.services.length);
    const svcStats = dp.serviceStats.all();
    const beStats = dp.backendStats.all();
    for (const s of st.services) {
      const labels = { interface: iface, vip: s.vip, port: String(s.port), proto: s.protocol };
      const c = sum(svcStats, s.id);
      out.services.push({ labels, packets: Number(c.packets), bytes: Number(c.bytes) });
      for (const b of s.backends) {
        const bc = sum(beStats, b.id);
        out.backends.push({ labels: { ...labels, backend: b.address }, packets: Number(bc.packets), bytes: Number(bc.bytes) });
      }
    }
  }
  return out;
}
