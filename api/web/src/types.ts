// What the API sends, as the console reads it (docs/api.md). Fields the console does not use
// are left out; optional ones may be missing or null on the wire.

export type Role = "admin" | "fleet_manager" | "driver" | "technician" | "viewer";

export interface User {
  id: string;
  email: string;
  role: Role;
  tenant_id: string;
  driver_id?: string | null;
}

export interface Tokens {
  access_token: string;
  refresh_token: string;
  expires_in: number;
  user: User;
}

/** A row of GET /api/vehicles. */
export interface Vehicle {
  id: string;
  code: string;
  vin?: string | null;
  make?: string | null;
  model?: string | null;
  year?: number | null;
  license_plate?: string | null;
  fuel_type?: string | null;
  status?: string | null;
  assigned_driver_id?: string | null;
}

/** A row of GET /api/drivers. */
export interface Driver {
  id: string;
  first_name?: string | null;
  last_name?: string | null;
}

export interface Page<T> {
  items: T[];
  page: number;
  limit: number;
  total: number;
}

/** core.live.LivePosition: the newest state of one vehicle. */
export interface LivePosition {
  vehicle_id: string;
  code: string;
  t_ms: number;
  lat?: number | null;
  lon?: number | null;
  speed_kph?: number | null;
  heading_deg?: number | null;
  ignition?: boolean | null;
  moving?: boolean | null;
  fuel_pct?: number | null;
  coolant_c?: number | null;
  battery_v?: number | null;
}

export type EventKind = "geofence" | "vehicle" | "anomaly";
export type Severity = "info" | "warning" | "critical";

/** core.live.LiveEvent, and what the console makes of a past event from the REST API. */
export interface FleetEvent {
  vehicle_id: string;
  code: string;
  t_ms: number;
  kind: EventKind;
  event_type: string;
  /** info, warning or critical (a newer server may send others: shown as info). */
  severity?: string;
  lat?: number | null;
  lon?: number | null;
  geofence_id?: string | null;
  geofence_name?: string | null;
  value?: number | null;
  /** Set once a dispatcher acknowledged the event. */
  ack?: Ack | null;
}

/** Who acknowledged an event, when, and why. */
export interface Ack {
  by: string;
  at_ms: number;
  comment: string | null;
}

/** core.live.LiveAck: an event was acknowledged (names the event as LiveEvent does). */
export interface LiveAck {
  vehicle_id: string;
  code: string;
  t_ms: number;
  kind: EventKind;
  event_type: string;
  geofence_id?: string | null;
  acked_by_email: string;
  acked_at_ms: number;
  comment?: string | null;
}

export type LiveMessage =
  | { type: "subscribed"; role: Role; tenant_id: string; flush_ms: number }
  | { type: "snapshot"; t_ms: number; positions: LivePosition[] }
  | { type: "batch"; t_ms: number; positions?: LivePosition[]; events?: FleetEvent[];
      acks?: LiveAck[]; dropped_events?: number; dropped_acks?: number }
  | { type: "heartbeat"; t_ms: number }
  | { type: "error"; code: string; message: string; field?: string };

export interface MapConfig {
  tiles_url: string;
  tiles_attribution: string;
  live_flush_ms: number;
}

/** GeoJSON Feature of GET /api/geofences. */
export interface FenceFeature {
  type: "Feature";
  id: string;
  geometry: { type: string; coordinates: unknown };
  properties: {
    name: string;
    kind: "polygon" | "circle" | "corridor";
    radius_m?: number | null;
    corridor_width_m?: number | null;
    speed_limit_kph?: number | null;
  };
}
