// The vehicle list: a search box, status filters with counts, a sort, and the rows. Only the
// rows in view exist in the DOM (fixed row height), so 10,000 vehicles scroll like 20.

import { byId, el, ago, fmt } from "./dom";
import {
  isAlerting, motionStatus, SORT_KEYS, STATUS_FILTERS,
  type Counts, type Query, type SortKey, type StatusFilter, type VehicleRow,
} from "./fleet";

const ROW_HEIGHT_PX = 44;
const OVERSCAN_ROWS = 6;

const SORT_LABELS: Record<SortKey, string> = {
  code: "Name", status: "Status", speed: "Speed", last_seen: "Last seen",
};

export interface ListHandlers {
  query(query: Query): void;
  select(vehicleId: string): void;
}

export class VehicleList {
  private readonly search = byId<HTMLInputElement>("vehicle-search");
  private readonly chips = byId("status-filters");
  private readonly sortSelect = byId<HTMLSelectElement>("vehicle-sort");
  private readonly scroller = byId("vehicle-rows");
  private readonly spacer = el("div", { class: "spacer" });
  private readonly summary = byId("vehicle-summary");
  private rows: VehicleRow[] = [];
  private now = Date.now();
  private selected: string | null = null;
  private statuses = new Set<StatusFilter>();

  constructor(private readonly handlers: ListHandlers, initial: Query) {
    this.search.value = initial.q;
    this.statuses = new Set(initial.statuses);
    for (const key of SORT_KEYS) this.sortSelect.append(el("option", { value: key }, SORT_LABELS[key]));
    this.sortSelect.value = initial.sort;
    for (const status of STATUS_FILTERS) {
      const chip = el("button", { type: "button", class: `chip ${status}`, "data-status": status,
                                  "aria-pressed": this.statuses.has(status) ? "true" : "false" },
                      el("i", { class: `dot ${status}` }), status, el("span", { class: "n" }, "0"));
      chip.addEventListener("click", () => this.toggle(status, chip));
      this.chips.append(chip);
    }
    this.scroller.append(this.spacer);
    this.search.addEventListener("input", () => this.emit());
    this.sortSelect.addEventListener("change", () => this.emit());
    this.scroller.addEventListener("scroll", () => this.draw(), { passive: true });
    this.scroller.addEventListener("click", (ev) => {
      const row = (ev.target as HTMLElement).closest<HTMLElement>("[data-vehicle-id]");
      if (row?.dataset.vehicleId) this.handlers.select(row.dataset.vehicleId);
    });
  }

  get query(): Query {
    return { q: this.search.value, statuses: [...this.statuses],
             sort: this.sortSelect.value as SortKey };
  }

  private toggle(status: StatusFilter, chip: HTMLElement): void {
    if (this.statuses.has(status)) this.statuses.delete(status);
    else this.statuses.add(status);
    chip.setAttribute("aria-pressed", String(this.statuses.has(status)));
    this.emit();
  }

  private emit(): void {
    this.scroller.scrollTop = 0;
    this.handlers.query(this.query);
  }

  show(rows: VehicleRow[], counts: Counts, now: number, selected: string | null): void {
    this.rows = rows;
    this.now = now;
    this.selected = selected;
    for (const chip of this.chips.querySelectorAll<HTMLElement>(".chip")) {
      const n = chip.querySelector(".n");
      if (n) n.textContent = String(counts[chip.dataset.status as StatusFilter]);
    }
    this.summary.textContent = rows.length === counts.all
      ? `${counts.all} vehicles` : `${rows.length} of ${counts.all} vehicles`;
    this.spacer.style.height = `${rows.length * ROW_HEIGHT_PX}px`;
    this.draw();
  }

  /** Bring a row into view (a selection made on the map or from a link). */
  reveal(vehicleId: string): void {
    const i = this.rows.findIndex((r) => r.id === vehicleId);
    if (i < 0) return;
    const top = i * ROW_HEIGHT_PX;
    const view = this.scroller.clientHeight;
    if (top < this.scroller.scrollTop || top + ROW_HEIGHT_PX > this.scroller.scrollTop + view) {
      this.scroller.scrollTop = Math.max(0, top - view / 2);
    }
    this.draw();
  }

  private draw(): void {
    const first = Math.max(0, Math.floor(this.scroller.scrollTop / ROW_HEIGHT_PX) - OVERSCAN_ROWS);
    const count = Math.ceil(this.scroller.clientHeight / ROW_HEIGHT_PX) + 2 * OVERSCAN_ROWS;
    const nodes = this.rows.slice(first, first + count).map((row, k) => this.rowNode(row, first + k));
    this.spacer.replaceChildren(...nodes);
  }

  private rowNode(row: VehicleRow, index: number): HTMLElement {
    const p = row.position;
    const status = motionStatus(p, this.now);
    const alerting = isAlerting(row, this.now);
    const detail = [row.plate, row.driver].filter(Boolean).join(" · ");
    return el("div", {
      class: `row ${status}${alerting ? " alerting" : ""}${row.id === this.selected ? " selected" : ""}`,
      role: "option", "aria-selected": row.id === this.selected ? "true" : "false",
      "data-vehicle-id": row.id, "data-status": status, "data-alerting": alerting ? "true" : "false",
      style: `top:${index * ROW_HEIGHT_PX}px;height:${ROW_HEIGHT_PX}px`,
    },
    el("i", { class: `dot ${status}`, title: status }),
    el("span", { class: "name" }, el("b", {}, row.code), el("small", {}, detail || "–")),
    el("span", { class: "speed" }, p?.speed_kph != null ? fmt(p.speed_kph, "km/h") : ""),
    el("span", { class: "seen" }, p ? ago(p.t_ms, this.now) : "never"));
  }
}
