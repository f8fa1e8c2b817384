import assert from "node:assert/strict";
import { test } from "node:test";

import { DEFAULT_VIEW, formatView, parseView, type ViewState } from "../src/view";

test("a view survives the URL", () => {
  const view: ViewState = { vehicle: "van 7/ü", q: "b-ft 1&2", statuses: ["moving", "alerting"],
                            sort: "speed", range: "24h", from: null, to: null, replay: true,
                            page: "overview" };
  assert.deepEqual(parseView(formatView(view)), view);
  const custom = { ...view, from: Date.parse("2026-12-01T08:00:00Z"), to: Date.parse("2026-12-01T09:30:00Z") };
  assert.deepEqual(parseView(formatView(custom)), custom);
  assert.match(formatView(custom), /from=2026-12-01T08%3A00%3A00.000Z/);
});

test("defaults stay out of the link", () => {
  assert.equal(formatView({ ...DEFAULT_VIEW }), "");
  assert.equal(formatView({ ...DEFAULT_VIEW, vehicle: "van-1" }), "#vehicle=van-1");
  assert.deepEqual(parseView(""), DEFAULT_VIEW);
});

test("malformed or unknown values fall back to defaults instead of failing", () => {
  const v = parseView("#status=moving,bogus,moving,&sort=nope&range=7y&vehicle=&q=" + "x".repeat(500));
  assert.deepEqual(v.statuses, ["moving"]);
  assert.equal(v.sort, DEFAULT_VIEW.sort);
  assert.equal(v.range, DEFAULT_VIEW.range);
  assert.equal(v.vehicle, null);
  assert.equal(v.q.length, 200);
  assert.deepEqual(parseView("#%E0%A4%A"), DEFAULT_VIEW);
  // A custom range needs both ends, in order, and at most a month.
  for (const bad of ["from=2026-12-02T00:00:00Z", "from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z",
                     "from=2026-01-01T00:00:00Z&to=2026-12-01T00:00:00Z", "from=soon&to=later"]) {
    const w = parseView(`#${bad}`);
    assert.equal(w.from, null, bad);
    assert.equal(w.to, null, bad);
  }
  assert.equal(parseView("#from=1000&to=2000").to, 2000, "epoch milliseconds are accepted");
});
