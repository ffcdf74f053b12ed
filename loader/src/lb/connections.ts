// The connection table as `xdp-dr list --connections` shows it (as `ipvsadm -L -c` does for LVS): every record that
// still binds its flow, with its service, its real server and the seconds until it lapses.
import { Dataplane } from '../dataplane/dataplane';
import { CONN_STATE, IPPROTO } from '../dataplane/layout';
import { connClockNow } from '../dataplane/clock';
import { serviceName } from '../config';
import { addrText, LbState } from './state';

export interface ConnectionRow {
  protocol: 'tcp';
  client: string;
  client_port: number;
  vip: string;
  port: number;
  /** The service that wrote the record. */
  service: string;
  /** null: the backend no longer holds the id it was given; the flow's next packet is picked afresh. */
  real_server: string | null;
  state: 'open' | 'closing';
  idle_s: number;
  expires_in_s: number;
}

/** Records that still bind their flows, oldest first; now is the program's clock (seconds of jiffies). */
export function readConnections(dp: Dataplane, st: LbState, now = connClockNow()): ConnectionRow[] {
  const timeouts = dp.connTimeouts;
  if (!timeouts) throw new Error(`the connection-table timeouts of the program under ${dp.pinDir} are not in its BTF: reattach with this build`);
  const services = new Map(st.services.map((s) => [s.id, s]));
  const rows: ConnectionRow[] = [];
  for (const [k, v] of dp.conns.all()) {
    const closing = v.state === CONN_STATE.CONN_CLOSING;
    // As the program counts it: a record refreshed just after this clock was read is as fresh as can be.
    const idle = Math.max(0, (now - v.seen) | 0);
    const limit = closing ? timeouts.closing : timeouts.idle;
    if (idle > limit) continue;
    // A record binds only for the service that wrote it, and only while that service tracks connections: an id
    // given to another service since, or a service that stopped tracking, leaves the record without effect.
    const svc = services.get(v.service);
    const vip = addrText(k.dst, k.family);
    if (!svc || !svc.connTable || svc.family !== k.family || IPPROTO[svc.protocol] !== k.proto || svc.vip !== vip ||
      (svc.port !== 0 && svc.port !== k.dport)) continue;
    const holder = st.records.get(v.backend);
    const be = holder?.info?.gen === v.gen ? svc.backends.find((b) => b.id === v.backend) : undefined;
    rows.push({
      protocol: 'tcp',
      client: addrText(k.src, k.family),
      client_port: k.sport,
      vip,
      port: k.dport,
      service: serviceName(svc),
      real_server: be?.address ?? null,
      state: closing ? 'closing' : 'open',
      idle_s: idle,
      expires_in_s: limit - idle,
    });
  }
  return rows.sort((a, b) => b.idle_s - a.idle_s);
}

