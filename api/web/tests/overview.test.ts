import assert from "node:assert/strict";
import { test } from "node:test";

import { topAlerts } from "../src/overview";
import type { FleetEvent } from "../src/types";

const e = (vehicle: string, severity: string, acked = false): FleetEvent => ({
  vehicle_id: vehicle, code: `van-${vehicle}`, t_ms: 1, kind: "vehicle", event_type: "overspeed", severity,
  ack: acked ? { by: "d", at_ms: 2, comment: null } : null,
});

test("most alerts: open ones first, then all, info events not counted", () => {
  const top = topAlerts([e("a", "warning"), e("a", "critical", true), e("b", "critical"), e("b", "warning"),
                         e("c", "info"), e("c", "info"), e("d", "warning", true)]);
  assert.deepEqual(top.map((c) => [c.code, c.open, c.total]),
                   [["van-b", 2, 2], ["van-a", 1, 2], ["van-d", 0, 1]]);
  assert.equal(topAlerts([e("a", "warning"), e("b", "warning")], 1).length, 1);
});
