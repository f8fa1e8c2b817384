import assert from "node:assert/strict";
import { test } from "node:test";

import { ALERT_WINDOW_MS, Fleet, matches, motionStatus, STALE_MS } from "../src/fleet";
import type { LivePosition, Vehicle } from "../src/types";

const NOW = 1_800_000_000_000;

function fleet(): Fleet {
  const vehicles: Vehicle[] = [
    { id: "a", code: "van-2", license_plate: "B-FT 123", vin: "WDB9066331S123456", assigned_driver_id: "d1" },
    { id: "b", code: "van-10", license_plate: "M-XY 9", vin: null },
    { id: "c", code: "truck-1", license_plate: null, make: "MAN", model: "TGX" },
  ];
  const f = new Fleet();
  f.setVehicles(vehicles, [{ id: "d1", first_name: "Ada", last_name: "Lovelace" }]);
  return f;
}

function pos(id: string, t: number, extra: Partial<LivePosition> = {}): LivePosition {
  return { vehicle_id: id, code: id, t_ms: t, lat: 52.5, lon: 13.4, ...extra };
}

test("status: moving, idle, off, and offline when never seen or silent too long", () => {
  assert.equal(motionStatus(null, NOW), "offline");
  assert.equal(motionStatus(pos("a", NOW, { moving: true, ignition: true }), NOW), "moving");
  assert.equal(motionStatus(pos("a", NOW, { moving: false, ignition: true }), NOW), "idle");
  assert.equal(motionStatus(pos("a", NOW, { moving: false, ignition: false }), NOW), "off");
  assert.equal(motionStatus(pos("a", NOW - STALE_MS - 1, { moving: true }), NOW), "offline");
  assert.equal(motionStatus(pos("a", NOW - STALE_MS, { moving: true }), NOW), "moving");
});

test("search: code, plate with or without separators, VIN, driver, make; case-insensitive", () => {
  const f = fleet();
  const a = f.get("a");
  const c = f.get("c");
  assert.ok(a && c);
  for (const q of ["van-2", "b-ft 123", "BFT123", "bft 12", "9066331", "lovelace", "ADA"]) {
    assert.ok(matches(a, q), q);
  }
  assert.ok(matches(c, "tgx"));
  assert.ok(!matches(a, "truck"));
  assert.ok(matches(a, "   "), "blank matches everything");
  assert.deepEqual(f.query({ q: "m-xy", statuses: [], sort: "code" }, NOW).map((r) => r.id), ["b"]);
});

test("out-of-order positions are ignored; partial positions merge onto the last one", () => {
  const f = fleet();
  assert.ok(f.applyPosition(pos("a", NOW, { speed_kph: 50, fuel_pct: 40 })));
  assert.ok(!f.applyPosition(pos("a", NOW - 1000, { speed_kph: 10 })));
  assert.ok(f.applyPosition({ vehicle_id: "a", code: "van-2", t_ms: NOW + 1000, speed_kph: 55, fuel_pct: null }));
  const p = f.get("a")?.position;
  assert.equal(p?.speed_kph, 55);
  assert.equal(p?.fuel_pct, 40, "a null does not erase what is known");
  assert.equal(p?.lat, 52.5);
});

test("a position of an unknown vehicle adds it, found by id and by code", () => {
  const f = fleet();
  f.applyPosition({ ...pos("z", NOW), code: "new-van" });
  assert.equal(f.get("new-van")?.id, "z");
  assert.equal(f.counts(NOW).all, 4);
});

test("filters: statuses are OR-ed, alerting is a status of its own, counts per status", () => {
  const f = fleet();
  f.applyPosition(pos("a", NOW, { moving: true, ignition: true }));
  f.applyPosition(pos("b", NOW, { moving: false, ignition: true }));
  f.noteEvent({ vehicle_id: "c", code: "truck-1", t_ms: NOW - 1000, kind: "vehicle",
                event_type: "overspeed", severity: "critical" });
  f.noteEvent({ vehicle_id: "b", code: "van-10", t_ms: NOW, kind: "geofence", event_type: "enter",
                severity: "info" });
  assert.deepEqual(f.counts(NOW), { all: 3, moving: 1, idle: 1, off: 0, offline: 1, alerting: 1 });
  const ids = (statuses: Parameters<Fleet["query"]>[0]["statuses"]) =>
    f.query({ q: "", statuses, sort: "code" }, NOW).map((r) => r.id);
  assert.deepEqual(ids(["moving"]), ["a"]);
  assert.deepEqual(ids(["moving", "idle"]), ["a", "b"]);
  assert.deepEqual(ids(["alerting"]), ["c"]);
  assert.deepEqual(ids([]), ["c", "a", "b"]);
  // The alert ages out.
  assert.equal(f.counts(NOW + ALERT_WINDOW_MS).alerting, 0);
});

test("sorts: names numerically, status with alerting first, speed, last seen", () => {
  const f = fleet();
  f.applyPosition(pos("a", NOW - 5000, { moving: true, speed_kph: 30 }));
  f.applyPosition(pos("b", NOW, { moving: true, speed_kph: 80 }));
  f.noteEvent({ vehicle_id: "c", code: "truck-1", t_ms: NOW, kind: "anomaly", event_type: "coolant_c",
                severity: "warning" });
  const order = (sort: "code" | "status" | "speed" | "last_seen") =>
    f.query({ q: "", statuses: [], sort }, NOW).map((r) => r.code);
  assert.deepEqual(order("code"), ["truck-1", "van-2", "van-10"]);
  assert.deepEqual(order("status"), ["truck-1", "van-2", "van-10"]);
  assert.deepEqual(order("speed"), ["van-10", "van-2", "truck-1"]);
  assert.deepEqual(order("last_seen"), ["van-10", "van-2", "truck-1"]);
});

test("reloading the vehicle list keeps live state", () => {
  const f = fleet();
  f.applyPosition(pos("a", NOW, { speed_kph: 12 }));
  f.setVehicles([{ id: "a", code: "van-2b" }], []);
  assert.equal(f.get("van-2b")?.position?.speed_kph, 12);
  assert.equal(f.get("van-2"), undefined);
});

test("an acknowledged alert no longer makes its vehicle alerting", async () => {
  const { eventKey } = await import("../src/events");
  const f = fleet();
  const alert = { vehicle_id: "c", code: "truck-1", t_ms: NOW, kind: "vehicle" as const,
                  event_type: "overspeed", severity: "critical" };
  f.noteEvent(alert);
  assert.equal(f.counts(NOW).alerting, 1);
  f.noteAck("c", eventKey(alert), { by: "d@example.com", at_ms: NOW, comment: null });
  assert.equal(f.counts(NOW).alerting, 0);
  // An acknowledged event from the REST list does not alert either.
  f.noteEvent({ ...alert, t_ms: NOW + 1, ack: { by: "x", at_ms: NOW, comment: null } });
  assert.equal(f.counts(NOW + 1).alerting, 0);
});
