// The fleet overview: GET /api/dashboard's figures (cached by the API for up to an hour; the
// page says when they were computed) and the vehicles with the most open alerts in the feed.

import { ApiError, type Api } from "./api";
import { byId, el } from "./dom";
import { isAlert } from "./events";
import type { FleetEvent } from "./types";

export interface Dashboard {
  computed_at: string;
  vehicles_total: number;
  vehicles_by_status: Record<string, number>;
  vehicle_events_24h: Record<string, number>;
  geofence_events_24h: Record<string, number>;
  anomalies_24h: number;
  online?: number | null;
  moving?: number | null;
  avg_fuel_level_pct?: number | null;
  distance_today_km?: number | null;
}

/** How many vehicles the "most alerts" list shows. */
const TOP = 10;

export interface AlertCount {
  vehicleId: string;
  code: string;
  open: number;
  total: number;
}

/** Vehicles by their alerts (warnings and critical events), the most open ones first. */
export function topAlerts(events: readonly FleetEvent[], top = TOP): AlertCount[] {
  const by = new Map<string, AlertCount>();
  for (const e of events) {
    if (!isAlert(e)) continue;
    const c = by.get(e.vehicle_id) ?? { vehicleId: e.vehicle_id, code: e.code, open: 0, total: 0 };
    c.total += 1;
    if (e.ack == null) c.open += 1;
    by.set(e.vehicle_id, c);
  }
  return [...by.values()]
    .sort((a, b) => b.open - a.open || b.total - a.total || a.code.localeCompare(b.code))
    .slice(0, top);
}

export class Overview {
  private readonly root = byId("overview");
  private readonly cards = byId("overview-cards");
  private readonly bars = byId("overview-bars");
  private readonly alerts = byId("overview-alerts");
  private readonly when = byId("overview-computed");

  constructor(private readonly api: Api, private readonly events: () => FleetEvent[],
              private readonly select: (vehicleId: string) => void) {
    byId("overview-refresh").addEventListener("click", () => void this.load());
  }

  get open(): boolean {
    return !this.root.hidden;
  }

  async show(): Promise<void> {
    this.root.hidden = false;
    await this.load();
  }

  hide(): void {
    this.root.hidden = true;
  }

  private async load(): Promise<void> {
    this.drawAlerts();
    let d: Dashboard;
    try {
      d = await this.api.get<Dashboard>("/api/dashboard");
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      this.cards.replaceChildren(el("p", { class: "error" }, err.message));
      return;
    }
    const pct = d.avg_fuel_level_pct == null ? "–" : `${Math.round(d.avg_fuel_level_pct)} %`;
    this.cards.replaceChildren(
      card("Vehicles", String(d.vehicles_total), "in the fleet"),
      card("Online", String(d.online ?? 0), "reported in the last 5 min"),
      card("Moving", String(d.moving ?? 0), "now"),
      card("Distance today", `${(d.distance_today_km ?? 0).toFixed(1)} km`, "since 00:00 UTC"),
      card("Average fuel", pct, "of those reporting"),
      card("Anomalies", String(d.anomalies_24h), "last 24 h"),
    );
    this.bars.replaceChildren(
      bars("Vehicles by status", d.vehicles_by_status),
      bars("Vehicle events, last 24 h", d.vehicle_events_24h),
      bars("Geofence events, last 24 h", d.geofence_events_24h),
    );
    this.when.textContent = `computed ${new Date(d.computed_at).toLocaleString()} (the API caches these figures)`;
  }

  private drawAlerts(): void {
    const top = topAlerts(this.events());
    this.alerts.replaceChildren(...top.map((c) => {
      const li = el("li", { "data-vehicle-id": c.vehicleId }, el("b", {}, c.code),
                    ` ${c.open} open of ${c.total} alerts`);
      li.addEventListener("click", () => this.select(c.vehicleId));
      return li;
    }));
    if (!top.length) this.alerts.append(el("li", { class: "empty" }, "no alerts in the feed"));
  }
}

function card(title: string, value: string, note: string): HTMLElement {
  return el("div", { class: "card" }, el("span", { class: "title" }, title),
            el("strong", { class: "value" }, value), el("small", {}, note));
}

function bars(title: string, counts: Record<string, number>): HTMLElement {
  const entries = Object.entries(counts).sort((a, b) => b[1] - a[1]);
  const max = Math.max(1, ...entries.map(([, n]) => n));
  return el("section", { class: "bars" }, el("h3", {}, title),
    ...(entries.length ? entries.map(([k, n]) => el("div", { class: "bar", "data-key": k },
      el("span", { class: "label" }, k.replace(/_/g, " ")),
      el("span", { class: "track" }, el("span", { class: "fill", style: `width:${(n / max) * 100}%` })),
      el("span", { class: "n" }, String(n)))) : [el("p", { class: "empty" }, "none")]));
}
