// The fleet as the console knows it: every vehicle of the tenant (from REST), its newest live
// position and its latest alert. Pure logic, no DOM: the list, the map and the tests read it.

import { eventKey } from "./events";
import type { Ack, Driver, FleetEvent, LivePosition, Vehicle } from "./types";

/** No position for this long: the vehicle shows as offline (the gateway or its link is down). */
export const STALE_MS = 5 * 60 * 1000;
/** A warning or critical event keeps its vehicle "alerting" this long. */
export const ALERT_WINDOW_MS = 30 * 60 * 1000;

export const MOTION_STATUSES = ["moving", "idle", "off", "offline"] as const;
export type MotionStatus = (typeof MOTION_STATUSES)[number];
export const STATUS_FILTERS = [...MOTION_STATUSES, "alerting"] as const;
export type StatusFilter = (typeof STATUS_FILTERS)[number];
export const SORT_KEYS = ["code", "status", "speed", "last_seen"] as const;
export type SortKey = (typeof SORT_KEYS)[number];

export interface VehicleRow {
  id: string;
  code: string;
  plate: string;
  vin: string;
  make: string;
  model: string;
  driver: string;
  position: LivePosition | null;
  lastAlert: FleetEvent | null;
  /** Lower-case text searched by the list's search box. */
  haystack: string;
}

export interface Query {
  q: string;
  statuses: readonly StatusFilter[];
  sort: SortKey;
}

export type Counts = Record<StatusFilter | "all", number>;

const STATUS_ORDER: Record<MotionStatus, number> = { moving: 0, idle: 1, off: 2, offline: 3 };

export function driverName(d: Driver): string {
  return [d.first_name, d.last_name].filter(Boolean).join(" ");
}

export function motionStatus(p: LivePosition | null, now: number): MotionStatus {
  if (p == null || now - p.t_ms > STALE_MS) return "offline";
  if (p.moving) return "moving";
  if (p.ignition) return "idle";
  return "off";
}

/** Alerting: a warning or critical event in the last ALERT_WINDOW_MS nobody acknowledged. */
export function isAlerting(row: VehicleRow, now: number): boolean {
  return row.lastAlert != null && row.lastAlert.ack == null &&
    now - row.lastAlert.t_ms <= ALERT_WINDOW_MS;
}

function rowOf(v: Vehicle, drivers: ReadonlyMap<string, string>): VehicleRow {
  const driver = v.assigned_driver_id ? drivers.get(v.assigned_driver_id) ?? "" : "";
  const row: VehicleRow = {
    id: v.id, code: v.code, plate: v.license_plate ?? "", vin: v.vin ?? "", make: v.make ?? "",
    model: v.model ?? "", driver, position: null, lastAlert: null, haystack: "",
  };
  row.haystack = [row.code, row.plate, row.vin, row.driver, row.make, row.model]
    .join("\u0000").toLowerCase();
  return row;
}

/** Plates are written with or without spaces and dashes: "B-FT 123" matches "bft123". */
function compact(s: string): string {
  return s.toLowerCase().replace(/[\s\-.]/g, "");
}

export function matches(row: VehicleRow, q: string): boolean {
  const needle = q.trim().toLowerCase();
  if (!needle) return true;
  if (row.haystack.includes(needle)) return true;
  const tight = compact(needle);
  return tight.length > 0 && compact(row.plate).includes(tight);
}

export class Fleet {
  readonly rows = new Map<string, VehicleRow>();
  private readonly byCode = new Map<string, VehicleRow>();

  /** Replace the vehicle list (positions and alerts already known are kept). */
  setVehicles(vehicles: readonly Vehicle[], drivers: readonly Driver[]): void {
    const names = new Map(drivers.map((d) => [d.id, driverName(d)]));
    const old = new Map(this.rows);
    this.rows.clear();
    this.byCode.clear();
    for (const v of vehicles) {
      const row = rowOf(v, names);
      const before = old.get(v.id);
      if (before) {
        row.position = before.position;
        row.lastAlert = before.lastAlert;
      }
      this.add(row);
    }
  }

  private add(row: VehicleRow): void {
    this.rows.set(row.id, row);
    this.byCode.set(row.code, row);
  }

  get(idOrCode: string): VehicleRow | undefined {
    return this.rows.get(idOrCode) ?? this.byCode.get(idOrCode);
  }

  /** Apply a live position; false when it is older than what is known (out of order). */
  applyPosition(p: LivePosition): boolean {
    let row = this.rows.get(p.vehicle_id);
    if (!row) {
      // A vehicle created after the list was loaded: known by its code until the next load.
      row = rowOf({ id: p.vehicle_id, code: p.code }, new Map());
      this.add(row);
    }
    const prev = row.position;
    if (prev && prev.t_ms > p.t_ms) return false;
    // Positions may carry only what changed: merge onto the previous state.
    row.position = prev ? { ...prev, ...stripNulls(p) } : p;
    return true;
  }

  /** Remember a warning or critical event as its vehicle's latest alert. */
  noteEvent(e: FleetEvent): void {
    if (e.severity !== "warning" && e.severity !== "critical") return;
    const row = this.rows.get(e.vehicle_id);
    if (row && (row.lastAlert == null || row.lastAlert.t_ms <= e.t_ms)) row.lastAlert = e;
  }

  /** An event was acknowledged: if it is its vehicle's latest alert, the vehicle calms down. */
  noteAck(vehicleId: string, key: string, ack: Ack): void {
    const row = this.rows.get(vehicleId);
    if (row?.lastAlert && eventKey(row.lastAlert) === key) row.lastAlert = { ...row.lastAlert, ack };
  }

  counts(now: number): Counts {
    const counts: Counts = { all: 0, moving: 0, idle: 0, off: 0, offline: 0, alerting: 0 };
    for (const row of this.rows.values()) {
      counts.all += 1;
      counts[motionStatus(row.position, now)] += 1;
      if (isAlerting(row, now)) counts.alerting += 1;
    }
    return counts;
  }

  /** The rows that match the query, in its order. No status selected means every status. */
  query(query: Query, now: number): VehicleRow[] {
    const wanted = new Set(query.statuses);
    // Decorate, sort, undecorate: each row's sort key is computed once, not per comparison
    // (10,000 rows are sorted several times a second).
    const keyed: { row: VehicleRow; key: number }[] = [];
    for (const row of this.rows.values()) {
      const status = motionStatus(row.position, now);
      const alerting = isAlerting(row, now);
      if (wanted.size > 0 && !(wanted.has("alerting") && alerting) && !wanted.has(status)) continue;
      if (matches(row, query.q)) keyed.push({ row, key: sortKey(query.sort, row, status, alerting) });
    }
    keyed.sort((a, b) => a.key - b.key || byCode(a.row, b.row));
    return keyed.map((k) => k.row);
  }
}

function stripNulls(p: LivePosition): Partial<LivePosition> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(p)) if (v != null) out[k] = v;
  return out;
}

const collator = new Intl.Collator(undefined, { numeric: true });

/** Names in natural order: van-2 before van-10. */
const byCode = (a: VehicleRow, b: VehicleRow): number => collator.compare(a.code, b.code);

/** A number that orders rows by `sort` (smaller first); ties go by name. */
function sortKey(sort: SortKey, row: VehicleRow, status: MotionStatus, alerting: boolean): number {
  switch (sort) {
    case "code":
      return 0;
    case "status":
      // Alerting first, then moving, idle, off, offline.
      return (alerting ? 0 : 10) + STATUS_ORDER[status];
    case "speed":
      return -(row.position?.speed_kph ?? -1);
    case "last_seen":
      return -(row.position?.t_ms ?? 0);
  }
}
