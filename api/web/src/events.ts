// The event inbox's logic: past events from the REST API and live ones from the socket, as one
// list, newest first, without duplicates, filtered by kind, severity and vehicle. No DOM.

import type { Ack, EventKind, FleetEvent, LiveAck, Severity } from "./types";

/** How many events the inbox keeps (older ones fall off the end). */
export const MAX_EVENTS = 500;

export const KINDS: readonly EventKind[] = ["geofence", "vehicle", "anomaly"];
export const SEVERITIES: readonly Severity[] = ["info", "warning", "critical"];

export interface EventFilter {
  kinds: ReadonlySet<EventKind>;
  /** The lowest severity shown. */
  minSeverity: Severity;
  vehicleId: string | null;
  /** Only events nobody has acknowledged yet. */
  unacknowledged?: boolean;
}

export const ALL_EVENTS: EventFilter = { kinds: new Set(KINDS), minSeverity: "info", vehicleId: null };

type Row = Record<string, unknown>;

const num = (v: unknown): number | null => (typeof v === "number" ? v : null);
const str = (v: unknown): string | null => (typeof v === "string" ? v : null);

function base(row: Row, kind: EventKind, eventType: string): FleetEvent {
  const ackedAt = str(row.acked_at);
  return {
    kind, event_type: eventType,
    vehicle_id: String(row.vehicle_id), code: str(row.vehicle_code) ?? "",
    t_ms: Date.parse(String(row.time)),
    lat: num(row.lat), lon: num(row.lon),
    ack: ackedAt ? { by: str(row.acked_by_email) ?? "", at_ms: Date.parse(ackedAt),
                     comment: str(row.ack_comment) } : null,
  };
}

/** An acknowledgement as the console keeps it. */
export function ackOf(a: LiveAck): Ack {
  return { by: a.acked_by_email, at_ms: a.acked_at_ms, comment: a.comment ?? null };
}

/** Alerts are the events that ask for a dispatcher: warnings and critical ones. */
export function isAlert(e: FleetEvent): boolean {
  return e.severity === "warning" || e.severity === "critical";
}

/** A row of GET /api/geofence-events as a live event (geofence events carry no severity). */
export function fromGeofenceRow(row: Row): FleetEvent {
  return { ...base(row, "geofence", String(row.event_type)), severity: "info",
           geofence_id: str(row.geofence_id), geofence_name: str(row.geofence_name) };
}

/** A row of GET /api/vehicle-events. */
export function fromVehicleRow(row: Row): FleetEvent {
  return { ...base(row, "vehicle", String(row.event_type)), severity: str(row.severity) ?? "info",
           value: num(row.value) };
}

/** A row of GET /api/anomalies?events_only=true (the stream sends these as warnings). */
export function fromAnomalyRow(row: Row): FleetEvent {
  return { ...base(row, "anomaly", String(row.signal)), severity: "warning", value: num(row.value) };
}

/** What names one event: the same for a LiveEvent, a REST row and a LiveAck (only geofence
 * events are told apart by their fence). */
export function eventKey(e: Pick<FleetEvent, "kind" | "vehicle_id" | "t_ms" | "event_type" | "geofence_id">
                         ): string {
  const fence = e.kind === "geofence" ? e.geofence_id ?? "" : "";
  return `${e.kind}|${e.vehicle_id}|${e.t_ms}|${e.event_type}|${fence}`;
}

function rank(severity: string | undefined): number {
  const i = (SEVERITIES as readonly string[]).indexOf(severity ?? "info");
  return i < 0 ? 0 : i;
}

export function shown(e: FleetEvent, f: EventFilter): boolean {
  return f.kinds.has(e.kind) && rank(e.severity) >= rank(f.minSeverity) &&
    (f.vehicleId == null || e.vehicle_id === f.vehicleId) && (!f.unacknowledged || e.ack == null);
}

/** Newest first, each event once, at most `max`. */
export class Inbox {
  private items: FleetEvent[] = [];
  private readonly keys = new Set<string>();
  /** Acknowledgements of events not (or no longer) in the inbox, applied when they arrive. */
  private readonly pendingAcks = new Map<string, Ack>();

  constructor(private readonly max = MAX_EVENTS) {}

  /** Add events in any order; returns how many were new. */
  add(events: Iterable<FleetEvent>): number {
    let added = 0;
    for (const e of events) {
      if (!Number.isFinite(e.t_ms)) continue;
      const key = eventKey(e);
      if (this.keys.has(key)) {
        // The same event again (REST and socket): keep what is known about its ack.
        if (e.ack) this.acknowledge(key, e.ack);
        continue;
      }
      this.keys.add(key);
      const pending = this.pendingAcks.get(key);
      this.pendingAcks.delete(key);
      this.items.push(pending && !e.ack ? { ...e, ack: pending } : e);
      added += 1;
    }
    if (added) {
      this.items.sort((a, b) => b.t_ms - a.t_ms);
      for (const dropped of this.items.splice(this.max)) this.keys.delete(eventKey(dropped));
    }
    return added;
  }

  /** Record an acknowledgement; true when it changed an event in the inbox. */
  acknowledge(key: string, ack: Ack): boolean {
    const i = this.items.findIndex((e) => eventKey(e) === key);
    if (i < 0) {
      this.pendingAcks.set(key, ack);
      return false;
    }
    const e = this.items[i] as FleetEvent;
    if (e.ack) return false;
    this.items[i] = { ...e, ack };
    return true;
  }

  /** Alerts (warning, critical) nobody has acknowledged. */
  get unacknowledged(): number {
    return this.items.filter((e) => isAlert(e) && e.ack == null).length;
  }

  list(filter: EventFilter = ALL_EVENTS): FleetEvent[] {
    return this.items.filter((e) => shown(e, filter));
  }

  get size(): number {
    return this.items.length;
  }
}

export function describe(e: FleetEvent): string {
  const value = e.value != null ? ` ${Number(e.value).toFixed(1)}` : "";
  if (e.kind === "geofence") return `${e.event_type} ${e.geofence_name ?? "geofence"}`;
  if (e.kind === "anomaly") return `anomaly: ${e.event_type}${value}`;
  return `${e.event_type.replace(/_/g, " ")}${value}`;
}
