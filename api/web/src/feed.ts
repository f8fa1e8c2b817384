// The event feed: the inbox's events, filtered by kind, lowest severity and (optionally) the
// selected vehicle; a click focuses the event's place and vehicle.

import { byId, clock, el } from "./dom";
import { describe, KINDS, SEVERITIES, type EventFilter, type Inbox } from "./events";
import type { EventKind, FleetEvent } from "./types";

/** Rows drawn at most (the inbox keeps more; filters reach them). */
const SHOWN = 200;

export class EventFeed {
  private readonly list = byId("events");
  private readonly kinds = byId("event-kinds");
  private readonly severity = byId<HTMLSelectElement>("event-severity");
  private readonly onlySelected = byId<HTMLInputElement>("event-selected-only");
  private readonly count = byId("event-count");
  private readonly chosen = new Set<EventKind>(KINDS);
  private selected: string | null = null;

  constructor(private readonly inbox: Inbox, private readonly onPick: (e: FleetEvent) => void) {
    for (const kind of KINDS) {
      const box = el("input", { type: "checkbox", checked: true, "data-kind": kind });
      box.addEventListener("change", () => {
        if (box.checked) this.chosen.add(kind);
        else this.chosen.delete(kind);
        this.draw();
      });
      this.kinds.append(el("label", { class: `kind ${kind}` }, box, kind));
    }
    const labels = { info: "all severities", warning: "warnings and critical", critical: "critical only" };
    for (const s of SEVERITIES) this.severity.append(el("option", { value: s }, labels[s]));
    this.severity.addEventListener("change", () => this.draw());
    this.onlySelected.addEventListener("change", () => this.draw());
  }

  get filter(): EventFilter {
    return {
      kinds: this.chosen, minSeverity: this.severity.value as EventFilter["minSeverity"],
      vehicleId: this.onlySelected.checked ? this.selected : null,
    };
  }

  setSelected(vehicleId: string | null): void {
    this.selected = vehicleId;
    if (this.onlySelected.checked) this.draw();
  }

  draw(): void {
    const events = this.inbox.list(this.filter);
    this.count.textContent = String(events.length);
    this.list.replaceChildren(...events.slice(0, SHOWN).map((e) => {
      const li = el("li", { class: `${e.kind} ${e.severity ?? "info"}`, "data-vehicle-id": e.vehicle_id,
                            "data-kind": e.kind, "data-event-type": e.event_type },
                    el("time", {}, clock(e.t_ms)), el("b", {}, e.code), ` ${describe(e)}`);
      li.addEventListener("click", () => this.onPick(e));
      return li;
    }));
  }
}
