import assert from "node:assert/strict";
import { test } from "node:test";

import { DEFAULT_VIEW, formatView, parseView, type ViewState } from "../src/view";

test("a view survives the URL", () => {
  const view: ViewState = { vehicle: "van 7/ü", q: "b-ft 1&2", statuses: ["moving", "alerting"],
                            sort: "speed", range: "24h" };
  assert.deepEqual(parseView(formatView(view)), view);
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
});
