import assert from "node:assert/strict";
import { test } from "node:test";

import { indexAt, overlapping, positionAt, ReplayClock, samplesFrom, stopsFrom, tripsFrom, utcDays } from "../src/replay-model";

const T0 = Date.parse("2026-12-08T10:00:00Z");
const iso = (s: number) => new Date(T0 + s * 1000).toISOString();

test("raw samples and time buckets read alike, sorted, bad times dropped", () => {
  const s = samplesFrom([
    { time: iso(10), lat: 52.1, lon: 13.1, avg_speed_kph: 40, avg_rpm: 1800, fuel_level_pct: 50 },
    { time: iso(0), lat: 52.0, lon: 13.0, speed_kph: 30, rpm: 1500, fuel_level_pct: 51 },
    { time: "not a time", lat: 1, lon: 1 },
  ]);
  assert.deepEqual(s.map((x) => [x.t - T0, x.speed, x.rpm]), [[0, 30, 1500], [10_000, 40, 1800]]);
});

test("indexAt: the last sample at or before t", () => {
  const s = samplesFrom([0, 10, 20].map((k) => ({ time: iso(k), lat: 1, lon: 1 })));
  assert.equal(indexAt(s, T0 - 1), -1);
  assert.equal(indexAt(s, T0), 0);
  assert.equal(indexAt(s, T0 + 15_000), 1);
  assert.equal(indexAt(s, T0 + 20_000), 2);
  assert.equal(indexAt(s, T0 + 99_000), 2);
  assert.equal(indexAt([], T0), -1);
});

test("positionAt interpolates between fixes, skips samples without one, holds after the last", () => {
  const s = samplesFrom([
    { time: iso(0), lat: 52.0, lon: 13.0 },
    { time: iso(5), lat: null, lon: null },
    { time: iso(10), lat: 52.1, lon: 13.2 },
  ]);
  assert.equal(positionAt(s, T0 - 1), null);
  const mid = positionAt(s, T0 + 5000);
  assert.ok(mid);
  assert.ok(Math.abs(mid.lat - 52.05) < 1e-9);
  assert.ok(Math.abs(mid.lon - 13.1) < 1e-9);
  assert.deepEqual(positionAt(s, T0 + 10_000), { lat: 52.1, lon: 13.2 });
  assert.deepEqual(positionAt(s, T0 + 60_000), { lat: 52.1, lon: 13.2 });
});

test("trips and stops: parsed and kept when they overlap the range", () => {
  const trips = tripsFrom([{ start_time: iso(0), end_time: iso(100), distance_km: 1.5, max_speed_kph: 60 },
                           { start_time: iso(500), end_time: iso(600), distance_km: 2, max_speed_kph: 70 }]);
  assert.equal(trips[0]?.distanceKm, 1.5);
  assert.deepEqual(overlapping(trips, T0 + 50_000, T0 + 400_000).map((t) => t.maxSpeedKph), [60]);
  const stops = stopsFrom([{ start_time: iso(100), end_time: iso(500), lat: 52, lon: 13 }]);
  assert.equal(stops[0]?.end, T0 + 500_000);
});

test("the clock plays at its speed, stops at the end, restarts from the beginning", () => {
  const c = new ReplayClock(T0, T0 + 3_600_000);
  assert.equal(c.advance(1000), T0, "paused: no move");
  c.speed = 60;
  c.play();
  assert.equal(c.advance(1000), T0 + 60_000);
  assert.ok(Math.abs(c.fraction - 1 / 60) < 1e-12);
  c.advance(10_000_000);
  assert.equal(c.t, T0 + 3_600_000);
  assert.equal(c.playing, false);
  c.play();
  assert.equal(c.t, T0, "play at the end starts over");
  assert.equal(c.seek(T0 - 5), T0);
  assert.equal(c.seek(T0 + 9e9), T0 + 3_600_000);
});

test("utcDays: every UTC day a range touches", () => {
  assert.deepEqual(utcDays(Date.parse("2026-12-08T23:30:00Z"), Date.parse("2026-12-09T00:10:00Z")),
                   ["2026-12-08", "2026-12-09"]);
  assert.deepEqual(utcDays(Date.parse("2026-12-08T10:00:00Z"), Date.parse("2026-12-08T11:00:00Z")),
                   ["2026-12-08"]);
  assert.equal(utcDays(Date.parse("2026-12-01T12:00:00Z"), Date.parse("2026-12-08T12:00:00Z")).length, 8);
});
