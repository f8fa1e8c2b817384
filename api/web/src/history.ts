// Reading the past from the REST API: events of every kind over a range (for the feed at load
// and for a replay) in the live socket's shape.

import { ApiError, type Api } from "./api";
import { fromAnomalyRow, fromGeofenceRow, fromVehicleRow } from "./events";
import type { FleetEvent, Page } from "./types";

/** Events per kind read at once (the API's page limit). */
const EVENTS_PER_KIND = 100;

type Row = Record<string, unknown>;

async function kind(api: Api, path: string, convert: (row: Row) => FleetEvent): Promise<FleetEvent[]> {
  try {
    const page = await api.get<Page<Row>>(`${path}&limit=${EVENTS_PER_KIND}`);
    return page.items.map(convert);
  } catch (err) {
    // A role that may not read one kind still gets the others.
    if (err instanceof ApiError && err.status === 403) return [];
    throw err;
  }
}

/** The newest events of each kind in [from, to), optionally of one vehicle. */
export async function fetchEvents(api: Api, from: number, to: number, vehicleId: string | null = null
                                  ): Promise<FleetEvent[]> {
  const range = `from=${encodeURIComponent(new Date(from).toISOString())}` +
    `&to=${encodeURIComponent(new Date(to).toISOString())}` +
    (vehicleId ? `&vehicle_id=${encodeURIComponent(vehicleId)}` : "");
  const lists = await Promise.all([
    kind(api, `/api/geofence-events?${range}`, fromGeofenceRow),
    kind(api, `/api/vehicle-events?${range}`, fromVehicleRow),
    kind(api, `/api/anomalies?events_only=true&${range}`, fromAnomalyRow),
  ]);
  return lists.flat();
}
