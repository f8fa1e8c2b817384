// The vehicle panel: who and what the selected vehicle is, its latest signals, why it is red
// (its latest alert), and its recent events.

import { byId, clock, el, fmt, ago } from "./dom";
import { describe } from "./events";
import { isAlerting, motionStatus, type VehicleRow } from "./fleet";
import type { FleetEvent } from "./types";

export class VehiclePanel {
  private readonly root = byId("panel");
  private readonly title = byId("panel-title");
  private readonly facts = byId("panel-facts");
  private readonly signals = byId("panel-signals");
  private readonly alert = byId("panel-alert");
  private readonly recent = byId("panel-events");

  constructor(handlers: { close(): void; replay(): void }) {
    byId("panel-close").addEventListener("click", () => handlers.close());
    byId("panel-replay").addEventListener("click", () => handlers.replay());
  }

  hide(): void {
    this.root.hidden = true;
  }

  show(row: VehicleRow, events: readonly FleetEvent[], now: number): void {
    this.root.hidden = false;
    this.root.dataset.vehicleId = row.id;
    this.title.textContent = row.code;
    const vehicle = [row.make, row.model].filter(Boolean).join(" ");
    this.facts.replaceChildren(...pairs([
      ["Plate", row.plate || "–"], ["VIN", row.vin || "–"], ["Vehicle", vehicle || "–"],
      ["Driver", row.driver || "unassigned"],
    ]));
    const p = row.position;
    const status = motionStatus(p, now);
    this.signals.replaceChildren(...pairs([
      ["Status", status], ["Speed", fmt(p?.speed_kph, "km/h")], ["Heading", fmt(p?.heading_deg, "°")],
      ["Ignition", p?.ignition == null ? "–" : p.ignition ? "on" : "off"],
      ["Fuel", fmt(p?.fuel_pct, "%")], ["Coolant", fmt(p?.coolant_c, "°C")],
      ["Battery", fmt(p?.battery_v, "V", 1)],
      ["Last seen", p ? `${clock(p.t_ms)} (${ago(p.t_ms, now)})` : "never"],
    ]));
    const a = row.lastAlert;
    this.alert.hidden = !(a && isAlerting(row, now));
    if (a) {
      this.alert.replaceChildren(el("b", {}, `${a.severity ?? "warning"}: `), describe(a),
                                 el("time", {}, ` ${clock(a.t_ms)}`));
    }
    this.recent.replaceChildren(...events.slice(0, 10).map((e) =>
      el("li", { class: `${e.kind} ${e.severity ?? "info"}` },
         el("time", {}, clock(e.t_ms)), describe(e))));
    if (!events.length) this.recent.append(el("li", { class: "empty" }, "no events in range"));
  }
}

function pairs(rows: [string, string][]): HTMLElement[] {
  return rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]);
}
