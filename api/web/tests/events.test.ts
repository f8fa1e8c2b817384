import assert from "node:assert/strict";
import { test } from "node:test";

import { ALL_EVENTS, describe, fromAnomalyRow, fromGeofenceRow, fromVehicleRow, Inbox } from "../src/events";
import type { FleetEvent } from "../src/types";

const T = "2026-12-08T10:00:00+00:00";
const ev = (t: number, extra: Partial<FleetEvent> = {}): FleetEvent => ({
  vehicle_id: "a", code: "van-1", t_ms: t, kind: "vehicle", event_type: "overspeed", severity: "warning", ...extra,
});

test("REST rows become the live socket's events", () => {
  const g = fromGeofenceRow({ time: T, vehicle_id: "a", vehicle_code: "van-1", geofence_id: "f",
                              geofence_name: "Depot", event_type: "enter", lat: 52.5, lon: 13.4 });
  assert.deepEqual(g, { kind: "geofence", event_type: "enter", vehicle_id: "a", code: "van-1",
                        t_ms: Date.parse(T), lat: 52.5, lon: 13.4, severity: "info",
                        geofence_id: "f", geofence_name: "Depot", ack: null });
  const v = fromVehicleRow({ time: T, vehicle_id: "a", vehicle_code: "van-1", event_type: "harsh_braking",
                             severity: "critical", value: 9.5, lat: null, lon: null });
  assert.equal(v.severity, "critical");
  assert.equal(describe(v), "harsh braking 9.5");
  const a = fromAnomalyRow({ time: T, vehicle_id: "a", vehicle_code: "van-1", signal: "coolant_c", value: 121 });
  assert.equal(a.kind, "anomaly");
  assert.equal(a.severity, "warning");
  assert.equal(describe(g), "enter Depot");
});

test("the inbox is newest first, holds each event once, and drops the oldest beyond its size", () => {
  const inbox = new Inbox(3);
  assert.equal(inbox.add([ev(1), ev(3), ev(2)]), 3);
  assert.equal(inbox.add([ev(3), ev(2)]), 0, "the same events from REST and from the socket");
  assert.equal(inbox.add([ev(4)]), 1);
  assert.deepEqual(inbox.list().map((e) => e.t_ms), [4, 3, 2]);
  assert.equal(inbox.add([ev(1)]), 1, "a dropped event may come back");
  assert.equal(inbox.size, 3);
  assert.equal(inbox.add([ev(Number.NaN)]), 0, "an event without a valid time is ignored");
});

test("filters: kind, lowest severity, vehicle", () => {
  const inbox = new Inbox();
  inbox.add([ev(1, { severity: "info" }), ev(2, { severity: "critical" }), ev(3, { kind: "geofence", severity: "info" }),
             ev(4, { vehicle_id: "b", severity: "warning" }), ev(5, { severity: "whatever" })]);
  const times = (f: Partial<typeof ALL_EVENTS>) => inbox.list({ ...ALL_EVENTS, ...f }).map((e) => e.t_ms);
  assert.deepEqual(times({}), [5, 4, 3, 2, 1]);
  assert.deepEqual(times({ minSeverity: "warning" }), [4, 2]);
  assert.deepEqual(times({ kinds: new Set(["geofence"]) }), [3]);
  assert.deepEqual(times({ vehicleId: "b" }), [4]);
});

test("acknowledgements: applied to the event they name, from REST rows too; counted while open", async () => {
  const { eventKey, ackOf } = await import("../src/events");
  const inbox = new Inbox();
  const alert = ev(10, { severity: "critical" });
  const fenceEnter = ev(11, { kind: "geofence", event_type: "enter", severity: "info", geofence_id: "f1" });
  inbox.add([alert, fenceEnter, ev(12, { severity: "warning" })]);
  assert.equal(inbox.unacknowledged, 2, "info events are not alerts");
  const ack = ackOf({ vehicle_id: "a", code: "van-1", t_ms: 10, kind: "vehicle", event_type: "overspeed",
                      acked_by_email: "d@example.com", acked_at_ms: 99, comment: "called the driver" });
  assert.ok(inbox.acknowledge(eventKey(alert), ack));
  assert.ok(!inbox.acknowledge(eventKey(alert), ack), "once");
  assert.equal(inbox.unacknowledged, 1);
  assert.deepEqual(inbox.list({ ...ALL_EVENTS, unacknowledged: true }).map((e) => e.t_ms), [12, 11]);
  assert.equal(inbox.list().find((e) => e.t_ms === 10)?.ack?.comment, "called the driver");
  // A geofence event is named with its fence; a vehicle event's geofence_id does not matter.
  assert.notEqual(eventKey(fenceEnter), eventKey({ ...fenceEnter, geofence_id: "f2" }));
  assert.equal(eventKey(alert), eventKey({ ...alert, geofence_id: "zone" }));
  // An ack that arrives before its event waits for it.
  inbox.acknowledge(eventKey(ev(20)), ack);
  inbox.add([ev(20)]);
  assert.equal(inbox.list().find((e) => e.t_ms === 20)?.ack?.by, "d@example.com");
  // A REST row carries its ack.
  const row = fromVehicleRow({ time: T, vehicle_id: "a", vehicle_code: "van-1", event_type: "idling",
                               severity: "warning", acked_at: T, acked_by_email: "m@example.com",
                               ack_comment: null });
  assert.deepEqual(row.ack, { by: "m@example.com", at_ms: Date.parse(T), comment: null });
});
