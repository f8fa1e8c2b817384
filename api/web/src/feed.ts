// The event feed: the inbox's events, filtered by kind, lowest severity and (optionally) the
// selected vehicle; a click focuses the event's place and vehicle.

import { byId, clock, el } from "./dom";
import { describe, KINDS, SEVERITIES, type EventFilter, type Inbox } from "./events";
import type { EventKind, FleetEvent } from "./types";

export interface FeedHandlers {
  pick(e: FleetEvent): void;
  /** Acknowledge an event with an optional comment; resolves with an error text or null. */
  acknowledge?(e: FleetEvent, comment: string): Promise<string | null>;
}

/** Rows drawn at most (the inbox keeps more; filters reach them). */
const SHOWN = 200;

export class EventFeed {
  private readonly list = byId("events");
  private readonly kinds = byId("event-kinds");
  private readonly severity = byId<HTMLSelectElement>("event-severity");
  private readonly onlySelected = byId<HTMLInputElement>("event-selected-only");
  private readonly onlyOpen = byId<HTMLInputElement>("event-unacknowledged-only");
  private readonly count = byId("event-count");
  private readonly open = byId("alerts-open");
  private readonly chosen = new Set<EventKind>(KINDS);
  private selected: string | null = null;

  constructor(private readonly inbox: Inbox, private readonly handlers: FeedHandlers) {
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
    this.onlyOpen.addEventListener("change", () => this.draw());
  }

  get filter(): EventFilter {
    return {
      kinds: this.chosen, minSeverity: this.severity.value as EventFilter["minSeverity"],
      vehicleId: this.onlySelected.checked ? this.selected : null,
      unacknowledged: this.onlyOpen.checked,
    };
  }

  setSelected(vehicleId: string | null): void {
    this.selected = vehicleId;
    if (this.onlySelected.checked) this.draw();
  }

  draw(): void {
    const events = this.inbox.list(this.filter);
    this.count.textContent = String(events.length);
    const open = this.inbox.unacknowledged;
    this.open.textContent = `${open} unacknowledged`;
    this.open.hidden = open === 0;
    this.list.replaceChildren(...events.slice(0, SHOWN).map((e) => this.item(e)));
  }

  private item(e: FleetEvent): HTMLElement {
    const li = el("li", { class: `${e.kind} ${e.severity ?? "info"}${e.ack ? " acked" : ""}`,
                          "data-vehicle-id": e.vehicle_id, "data-kind": e.kind,
                          "data-event-type": e.event_type, "data-t": e.t_ms },
                  el("time", {}, clock(e.t_ms)), el("b", {}, e.code), ` ${describe(e)}`);
    li.addEventListener("click", () => this.handlers.pick(e));
    if (e.ack) {
      li.append(el("div", { class: "ack" }, `✓ ${e.ack.by} ${clock(e.ack.at_ms)}`,
                   e.ack.comment ? el("q", {}, e.ack.comment) : null));
    } else if (this.handlers.acknowledge) {
      const button = el("button", { type: "button", class: "ack-button" }, "Acknowledge");
      button.addEventListener("click", (ev) => {
        ev.stopPropagation();
        this.askComment(li, e, button);
      });
      li.append(button);
    }
    return li;
  }

  /** The acknowledgement form, in the event's row: an optional comment, then send. */
  private askComment(li: HTMLElement, e: FleetEvent, button: HTMLElement): void {
    button.remove();
    const comment = el("input", { type: "text", maxlength: 1000, placeholder: "comment (optional)",
                                  "aria-label": "Comment" });
    const send = el("button", { type: "submit" }, "Send");
    const error = el("span", { class: "error", role: "alert" });
    const form = el("form", { class: "ack-form" }, comment, send, error);
    form.addEventListener("click", (ev) => ev.stopPropagation());
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      send.setAttribute("disabled", "");
      void this.handlers.acknowledge?.(e, comment.value).then((problem) => {
        send.removeAttribute("disabled");
        error.textContent = problem ?? "";
      });
    });
    li.append(form);
    comment.focus();
  }
}
