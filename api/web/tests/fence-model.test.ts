import assert from "node:assert/strict";
import { test } from "node:test";

import { checkForm, errorPlace, fenceFeature, formField, formOf } from "../src/fence-model";

test("a new fence's form: empty, active, no alerts, a 50 m corridor", () => {
  const f = formOf(null);
  assert.equal(f.name, "");
  assert.equal(f.isActive, true);
  assert.equal(f.alertOnEntry, false);
  assert.equal(f.corridorWidthM, "50");
  assert.deepEqual(formOf({ name: "Depot", kind: "polygon", speed_limit_kph: 30, debounce_s: 0 }).speedLimitKph, "30");
  assert.equal(formOf({ name: "Depot", kind: "polygon", debounce_s: 0 }).debounceS, "0");
});

test("the form is checked as the API checks it", () => {
  const ok = { ...formOf(null), name: "Depot" };
  assert.deepEqual(checkForm(ok, "polygon"), {});
  assert.deepEqual(Object.keys(checkForm({ ...ok, name: "  " }, "polygon")), ["name"]);
  assert.equal(checkForm({ ...ok, speedLimitKph: "fast" }, "polygon").speedLimitKph, "a number");
  assert.equal(checkForm({ ...ok, speedLimitKph: "0.5" }, "polygon").speedLimitKph, "between 1 and 1000");
  assert.equal(checkForm({ ...ok, dwellS: "1.5" }, "polygon").dwellS, "a whole number");
  assert.equal(checkForm({ ...ok, dwellS: "0" }, "polygon").dwellS, "between 1 and 2147483647");
  assert.deepEqual(checkForm({ ...ok, debounceS: "0" }, "polygon"), {}, "0 s debounce is allowed");
  assert.equal(checkForm({ ...ok, corridorWidthM: "" }, "corridor").corridorWidthM, "a number");
  assert.deepEqual(checkForm({ ...ok, corridorWidthM: "" }, "polygon"), {}, "width only for corridors");
});

test("the Feature sent: blanks are nulls, kind-specific properties only for their kind", () => {
  const form = { ...formOf(null), name: " Depot ", category: "", speedLimitKph: "30", debounceS: "" };
  const poly = fenceFeature(form, "polygon", { type: "Polygon", coordinates: [] });
  assert.deepEqual(poly.properties, {
    name: "Depot", kind: "polygon", category: null, speed_limit_kph: 30, dwell_s: null, debounce_s: null,
    alert_on_entry: false, alert_on_exit: false, is_active: true,
  });
  const circle = fenceFeature(form, "circle", { type: "Point", coordinates: [13.4, 52.5] }, 120);
  assert.equal((circle.properties as Record<string, unknown>).radius_m, 120);
  const road = fenceFeature({ ...form, corridorWidthM: "40" }, "corridor", { type: "LineString", coordinates: [] });
  assert.equal((road.properties as Record<string, unknown>).corridor_width_m, 40);
});

test("the place a GEOS message names, as lon lat", () => {
  assert.deepEqual(errorPlace("invalid geometry: Self-intersection[13.3999945 52.5200305]"),
                   { lon: 13.3999945, lat: 52.5200305 });
  assert.deepEqual(errorPlace("Ring Self-intersection[-0.5 -12]"), { lon: -0.5, lat: -12 });
  assert.equal(errorPlace("a position is [longitude, latitude]"), null);
  assert.equal(errorPlace("Too few points[400 95]"), null, "not a place on Earth");
});

test("API fields map to form fields", () => {
  assert.equal(formField("properties.speed_limit_kph"), "speedLimitKph");
  assert.equal(formField("geometry"), null);
  assert.equal(formField(undefined), null);
});
