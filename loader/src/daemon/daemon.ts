// `xdp-dr run`: the load balancer as a service. It attaches (or adopts what is pinned), applies the config,
// health-checks every real server and takes the ones that fail out of the Maglev tables (and puts them back),
// serves Prometheus metrics, and reloads the config on SIGHUP or when the file changes. The data path never
// depends on this process: it runs from pinned state, so the daemon can stop, crash or restart without a lost
// packet, and a new daemon adopts what it finds.
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { loadConfigFile, serviceName, ConfigError, type Config, type Service } from '../config';
import { ensureObject, ROOT } from '../dataplane/build';
import { Dataplane, objectLimits, buildId, attachPinned, LINK_PIN } from '../dataplane/dataplane';
import { attach, detach, interfaceExists, requireLink } from '../lb/instance';
import { prepare, apply, Prepared } from '../lb/change';
import { Journal } from '../lb/apply';
import { formatPlan, planIsEmpty } from '../lb/plan';
import { addrText, readState } from '../lb/state';
import { confirmNeighbours, resolveMacs, type MacAnswer, type MacRequest } from '../lb/netif';
import { HealthChecker, type ProbeTarget, type HealthChange, type ProbeEvent } from '../health/checker';
import type { VipRoute } from '../health/vipprobe';
import { execFileSync } from 'node:child_process';
import { Metrics, BackendHealth } from '../metrics/metrics';
import { logger } from '../log';
import { macToString } from '../packet';
import { UsageError } from '../errors';
import { withChangeLock } from '../lb/lock';

export interface DaemonOptions {
  configFile: string;
  /** HOST:PORT for /metrics; empty = no metrics server. */
  metricsAddress: string;
  detachOnExit: boolean;
  /** How often the surroundings are looked at (interfaces, pins, real-server MACs); 0 = never. */
  surveyMs?: number;
}

/** How long a survey waits for a real server whose neighbour entry failed to answer a broadcast (a LAN: ms). */
const FOLLOW_TIMEOUT_MS = 1000;

const keyOf = (s: { vip: string; port: number; protocol: string }, address: string): string => `${serviceName(s)}|${address}`;

export class Daemon {
  private config!: Config;
  private configDigest = '';
  private readonly lbs = new Map<string, Dataplane>();
  private readonly checker = new HealthChecker();
  private readonly down = new Set<string>();
  /** Services whose every backend is down, kept on their last known set (logged once per episode). */
  private readonly keptAllDown = new Set<string>();
  private metrics?: Metrics;
  /** Real-server MACs seen in the maps, kept when a server leaves them (its VIP probe still needs the MAC). */
  private readonly macs = new Map<string, string>();
  private watcher?: fs.FSWatcher;
  private debounce?: NodeJS.Timeout;
  private queue: Promise<void> = Promise.resolve();
  private stopping = false;
  private survey?: NodeJS.Timeout;
  /** A survey is queued or running: a slow one (a real server not answering) must not pile up behind itself. */
  private surveying = false;
  /** Neighbour entries (`${iface}/${address}`) found failed, so that it is said once per episode. */
  private readonly neighFailed = new Set<string>();
  /** Interfaces found gone, so that it is said once, and said again when they return. */
  private readonly gone = new Set<string>();

  constructor(private readonly opts: DaemonOptions) {}

  async start(): Promise<void> {
    const objPath = ensureObject('xdp_dr');
    this.config = this.readConfig();
    for (const { name, mode } of this.config.interfaces) {
      const { dp, attached } = attach(name, mode, this.config.hashSeed, { sameBuild: false });
      this.lbs.set(name, dp);
      if (attached) logger.info(`attached to ${name}`, { iface: name, mode });
      else logger.info(`adopted the load balancer already running on ${name}`, { iface: name, mode: readState(dp).mode });
    }
    this.checker.on('change', (c: HealthChange) => this.onHealth(c));
    this.checker.on('probe', (p: ProbeEvent) => this.onProbe(p));
    // Applying first resolves the real servers' MACs, which probes of the VIP through one real server need.
    await this.reconcile('start');
    this.checker.set(this.targets());

    if (this.opts.metricsAddress) {
      const version = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version as string;
      this.metrics = new Metrics(
        { lbs: () => [...this.lbs].map(([iface, dp]) => ({ iface, dp })), backendHealth: () => this.backendHealth() },
        { version, build: buildId(objPath).toString('hex').slice(0, 12) },
      );
      const where = await this.metrics.listen(this.opts.metricsAddress);
      logger.info(`metrics on http://${where}/metrics`);
    }

    process.on('SIGHUP', () => this.schedule(() => this.reload('SIGHUP')));
    const every = this.opts.surveyMs ?? 2000;
    if (every > 0)
      this.survey = setInterval(() => {
        if (this.surveying) return;
        this.surveying = true;
        this.schedule(() => this.look().finally(() => (this.surveying = false)));
      }, every);
    // Editors replace files rather than write them in place: watch the directory, not the file.
    const file = path.resolve(this.opts.configFile);
    this.watcher = fs.watch(path.dirname(file), (_event, name) => {
      if (name !== path.basename(file)) return;
      clearTimeout(this.debounce);
      this.debounce = setTimeout(() => this.schedule(() => this.reload('file changed')), 300);
    });
  }

  /** Stops checking and serving; the load balancer keeps forwarding unless detachOnExit. */
  async stop(signal: string): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    logger.info(`stopping on ${signal}`, { detach: this.opts.detachOnExit });
    this.checker.stop();
    clearInterval(this.survey);
    this.watcher?.close();
    clearTimeout(this.debounce);
    await this.queue.catch(() => undefined);
    await this.metrics?.close();
    for (const [iface, dp] of this.lbs) {
      dp.close();
      if (this.opts.detachOnExit) {
        detach(iface);
        logger.info(`detached from ${iface}`);
      } else logger.info(`${iface} keeps forwarding from its pinned state`);
    }
  }

  private readConfig(): Config {
    const text = fs.readFileSync(this.opts.configFile);
    const cfg = loadConfigFile(this.opts.configFile, { limits: objectLimits(ensureObject('xdp_dr')), interfaceExists });
    this.configDigest = createHash('sha256').update(text).digest('hex');
    return cfg;
  }

  /** Work that touches the maps runs one at a time, in order. */
  private schedule(job: () => Promise<void>): void {
    if (this.stopping) return;
    this.queue = this.queue.then(job).catch((e) => logger.error(`unexpected: ${(e as Error).message}`));
  }

  private async reload(why: string): Promise<void> {
    let next: Config;
    try {
      if (createHash('sha256').update(fs.readFileSync(this.opts.configFile)).digest('hex') === this.configDigest) return;
      next = this.readConfig();
      const changed = next.hashSeed !== this.config.hashSeed;
      const attachedOnly = next.interfaces.filter((i) => !this.lbs.has(i.name));
      if (changed)
        throw new UsageError(`hash_seed ${next.hashSeed} differs from the running ${this.config.hashSeed}: it is built into the loaded program; restart with --detach-on-exit, or detach, to change it`);
      for (const { name, mode } of attachedOnly) {
        const { dp } = attach(name, mode, next.hashSeed, { sameBuild: false });
        this.lbs.set(name, dp);
        logger.info(`attached to ${name}`, { iface: name, mode });
      }
    } catch (e) {
      this.metrics?.reloads.inc({ result: 'rejected' });
      const msg = e instanceof ConfigError ? e.message : (e as Error).message;
      logger.error(`config reload (${why}) rejected; still running the previous config`, { error: msg });
      return;
    }
    const previous = this.config;
    this.config = next;
    this.checker.set(this.targets());
    if (await this.reconcile(`reload (${why})`)) {
      this.metrics?.reloads.inc({ result: 'applied' });
      logger.info(`config reload (${why}) applied`);
    } else {
      this.config = previous;
      this.checker.set(this.targets());
      this.metrics?.reloads.inc({ result: 'rejected' });
    }
  }

  /**
   * What can change around the load balancer without telling it: an interface deleted (and created again), pins
   * removed from bpffs, a real server's MAC changed (followMacs finds it, the reconcile at the end writes it).
   */
  private async look(): Promise<void> {
    for (const [iface, dp] of [...this.lbs]) {
      const st = readState(dp);
      let ifindex: number | undefined;
      try {
        ifindex = requireLink(iface).ifindex;
      } catch {
        ifindex = undefined;
      }
      if (ifindex === undefined) {
        if (!this.gone.has(iface)) logger.error(`${iface} is gone: nothing reaches the load balancer there until it returns`, { iface });
        this.gone.add(iface);
        continue;
      }
      if (ifindex !== st.ifindex) {
        // The interface was deleted and created again: the old attachment died with it. Attach afresh.
        logger.warn(`${iface} is back (ifindex ${st.ifindex} -> ${ifindex}): attaching again`, { iface });
        this.gone.delete(iface);
        const mode = this.config.interfaces.find((i) => i.name === iface)?.mode ?? 'native';
        dp.close();
        this.lbs.delete(iface);
        detach(iface);
        const { dp: fresh } = attach(iface, mode, this.config.hashSeed, { sameBuild: false });
        this.lbs.set(iface, fresh);
        continue;
      }
      this.gone.delete(iface);
      const fixed = dp.repairPins();
      if (fixed.length) {
        logger.error(`pins of ${iface} were removed behind our back (${fixed.join(', ')}): pinned them again from the open maps`, { iface });
        this.metrics?.pinRepairs.inc({ interface: iface }, fixed.length);
      }
      if (!fs.existsSync(path.join(dp.pinDir, LINK_PIN)) && dp.progFd !== undefined) {
        // Without its pin and with no other holder the XDP link is gone, and with it the program on the NIC.
        const mode = this.config.interfaces.find((i) => i.name === iface)?.mode ?? 'native';
        logger.error(`the XDP link pin of ${iface} was removed and the program detached with it: attaching again`, { iface });
        attachPinned(dp.progFd, iface, mode, dp.pinDir);
        this.metrics?.pinRepairs.inc({ interface: iface });
      }
    }
    await this.reconcile('survey', await this.followMacs());
  }

  /**
   * Every real server of the config whose MAC comes from the neighbour table, the ones that are down included
   * (a check of the VIP sends to the MAC known here, so a server taken out for an old MAC must be able to come
   * back): the kernel re-confirms its entry, and a MAC that changed is logged, counted and handed to the
   * reconcile, which writes it. An entry that failed is said once and changes nothing: the maps keep the MAC
   * they hold. A MAC given in the config is never looked up: its server's entry is only re-confirmed.
   */
  private async followMacs(): Promise<Map<string, MacAnswer>> {
    const given = new Set(this.config.services.flatMap((s) => s.backends.filter((b) => b.mac).map((b) => b.address)));
    const all = new Map<string, MacRequest>();
    for (const iface of this.lbs.keys())
      for (const s of this.config.services)
        for (const b of s.backends) all.set(`${b.interface ?? iface}/${b.address}`, { address: b.address, iface: b.interface ?? iface });
    const reqs = new Map([...all].filter(([, r]) => !given.has(r.address)));
    let answers: Map<string, MacAnswer>;
    try {
      // Servers with a given MAC too: their health checks go through the kernel's entry.
      if (all.size) await confirmNeighbours([...all.values()]);
      if (!reqs.size) return new Map();
      answers = await resolveMacs([...reqs.values()], { timeoutMs: FOLLOW_TIMEOUT_MS });
    } catch (e) {
      logger.error(`cannot follow real-server MACs: ${(e as Error).message}`);
      return new Map();
    }
    for (const [key, { address, iface }] of reqs) {
      const a = answers.get(key);
      const known = this.macs.get(address);
      if (a?.mac) {
        if (this.neighFailed.delete(key)) logger.info(`backend ${address} answers on ${iface} again, at ${a.mac}`, { backend: address, iface });
        this.noteMac(address, a.mac);
      } else if (!this.neighFailed.has(key)) {
        this.neighFailed.add(key);
        logger.warn(`${a?.error ?? `no MAC for ${address} on ${iface}`}${known ? `; keeping ${known}, which it had` : ''}`, { backend: address, iface });
      }
    }
    return answers;
  }

  /** Remembers a real server's MAC; a different one than remembered is said and counted, once, by whoever sees it first. */
  private noteMac(address: string, mac: string): void {
    const known = this.macs.get(address);
    if (known && known !== mac) {
      logger.warn(`backend ${address} MAC changed ${known} -> ${mac}`, { backend: address, from: known, to: mac });
      this.metrics?.macChanges.inc({ backend: address });
    }
    this.macs.set(address, mac);
  }

  private targets(): ProbeTarget[] {
    const out: ProbeTarget[] = [];
    const links = new Map<string, { ifindex: number; mac: string; addrs: { family: string; local: string; scope: string }[] } | null>();
    for (const s of this.config.services)
      if (s.healthCheck && s.healthCheck.type !== 'none')
        for (const b of s.backends) {
          const t: ProbeTarget = { key: keyOf(s, b.address), address: b.address, check: s.healthCheck };
          if (s.healthCheck.target === 'vip') t.viaVip = this.vipRoute(s, b, links);
          out.push(t);
        }
    return out;
  }

  /** How a probe reaches the VIP on one real server: out of its interface, from an address of ours, to its MAC. */
  private vipRoute(
    s: Service,
    b: Service['backends'][number],
    links: Map<string, { ifindex: number; mac: string; addrs: { family: string; local: string; scope: string }[] } | null>,
  ): VipRoute | undefined {
    const iface = b.interface ?? this.config.interfaces[0]?.name;
    const realMac = b.mac ?? this.macs.get(b.address);
    if (!iface || !realMac) return undefined;
    if (!links.has(iface)) {
      try {
        const link = requireLink(iface);
        const addrs = JSON.parse(execFileSync('ip', ['-j', 'addr', 'show', 'dev', iface], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }))[0]?.addr_info ?? [];
        links.set(iface, { ifindex: link.ifindex, mac: link.mac, addrs });
      } catch {
        links.set(iface, null);
      }
    }
    const link = links.get(iface);
    if (!link) return undefined;
    const vips = new Set(this.config.services.map((x) => x.vip));
    const source = link.addrs.find((a) => a.family === (s.family === 4 ? 'inet' : 'inet6') && a.scope === 'global' && !vips.has(a.local))?.local;
    return source ? { vip: s.vip, ifindex: link.ifindex, lbMac: link.mac, source, realMac } : undefined;
  }

  /** Learns the MACs the maps hold; probes of VIPs get routes that became known or changed (MACs, interfaces). */
  private refreshRoutes(): void {
    for (const dp of this.lbs.values())
      for (const svc of readState(dp).services) for (const b of svc.backends) this.noteMac(b.address, b.mac);
    // set() leaves targets whose route did not change alone, health and schedule included.
    if (this.config.services.some((s) => s.healthCheck?.target === 'vip')) this.checker.set(this.targets());
  }

  private onHealth(c: HealthChange): void {
    const [service, backend] = c.key.split('|');
    if (c.health === 'down') this.down.add(c.key);
    else this.down.delete(c.key);
    (c.health === 'down' ? logger.warn : logger.info).call(logger, `backend ${backend} of ${service} is ${c.health}: ${c.reason}`, { service, backend });
    this.schedule(async () => void (await this.reconcile(`health: ${backend} ${c.health}`)));
  }

  private onProbe(p: ProbeEvent): void {
    if (!this.metrics) return;
    const [service] = p.key.split('|');
    const s = this.config.services.find((x) => serviceName(x) === service);
    if (!s) return;
    const labels = { vip: s.vip, port: String(s.port), proto: s.protocol, backend: p.target.address };
    this.metrics.checkDuration.observe(labels, p.result.durationMs / 1000);
    if (!p.result.ok) this.metrics.checkFailures.inc(labels);
  }

  /** The config with the backends that are down left out, unless that would leave a service with none. */
  private effective(lb: Dataplane): Service[] {
    const running = new Map(readState(lb).services.map((s) => [serviceName(s), new Set(s.backends.map((b) => b.address))]));
    return this.config.services.map((s) => {
      const name = serviceName(s);
      const up = s.backends.filter((b) => !this.down.has(keyOf(s, b.address)));
      const serving = s.backends.filter((b) => b.weight > 0);
      if (serving.length && serving.every((b) => this.down.has(keyOf(s, b.address)))) {
        // Every real server failing its check is more often the check or the network than the servers: keep
        // forwarding to the last set that was in the table.
        const last = running.get(name);
        if (!this.keptAllDown.has(name))
          logger.warn(`every backend of ${name} is down: keeping the last known set in the table (policy: keep)`, { service: name });
        this.keptAllDown.add(name);
        return { ...s, backends: last?.size ? s.backends.filter((b) => last.has(b.address)) : s.backends };
      }
      this.keptAllDown.delete(name);
      return { ...s, backends: up };
    });
  }

  /**
   * Makes the maps hold the effective config, as one transaction over all interfaces; false when it failed.
   * neighbours: MACs the survey has just read, so that they are not looked up twice.
   */
  private async reconcile(why: string, neighbours?: Map<string, MacAnswer>): Promise<boolean> {
    try {
      return await withChangeLock(() => this.reconcileLocked(why, neighbours));
    } catch (e) {
      this.metrics?.changes.inc({ result: 'failed' });
      logger.error(`change (${why}) failed, nothing applied: ${(e as Error).message}`);
      return false;
    }
  }

  private async reconcileLocked(why: string, neighbours?: Map<string, MacAnswer>): Promise<boolean> {
    const journal = new Journal();
    const prepared: Prepared[] = [];
    try {
      for (const [iface, dp] of this.lbs) prepared.push(await prepare({ iface, dp }, this.effective(dp), { neighbours }));
      for (const p of prepared) {
        for (const w of p.warnings) logger.warn(w);
        if (planIsEmpty(p.plan)) continue;
        const stats = apply(p, journal);
        this.metrics?.slotsWritten.inc(stats.slotsWritten);
        for (const line of formatPlan(p.plan)) logger.info(`${p.target.iface}: ${line.trim()}`, { why });
      }
      // A reconcile after a health change may be the first to read a new MAC.
      for (const p of prepared) for (const w of p.plan.backendWrites) this.noteMac(addrText(w.meta.addr, w.meta.family), macToString(w.info.dst_mac));
      if (prepared.some((p) => !planIsEmpty(p.plan))) this.metrics?.changes.inc({ result: 'applied' });
      this.refreshRoutes();
      return true;
    } catch (e) {
      this.metrics?.changes.inc({ result: 'failed' });
      logger.error(`change (${why}) failed, nothing applied: ${(e as Error).message}`);
      return false;
    }
  }

  private backendHealth(): BackendHealth[] {
    return this.config.services.flatMap((s) =>
      s.backends.map((b) => ({
        vip: s.vip, port: s.port, proto: s.protocol, backend: b.address, weight: b.weight, up: !this.down.has(keyOf(s, b.address)),
      })),
    );
  }
}
