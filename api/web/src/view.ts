// What the dispatcher is looking at, kept in the URL's fragment so that a link pasted to a
// colleague opens the same view: `#vehicle=van-007&q=b-ft&status=moving,alerting&sort=speed
// &range=1h`. Unknown or malformed values fall back to the defaults instead of failing.

import { SORT_KEYS, STATUS_FILTERS, type SortKey, type StatusFilter } from "./fleet";

export const RANGES = ["30m", "1h", "6h", "24h", "7d"] as const;
export type Range = (typeof RANGES)[number];

export interface ViewState {
  /** The selected vehicle's code (readable in a link), or null. */
  vehicle: string | null;
  q: string;
  statuses: StatusFilter[];
  sort: SortKey;
  /** How far back the selected vehicle's track and replay go (unless from/to are set). */
  range: Range;
  /** A custom range (epoch ms, both or neither, from < to, at most MAX_CUSTOM_MS long). */
  from: number | null;
  to: number | null;
  /** The replay is open. */
  replay: boolean;
  /** Which page: the live map or the fleet overview. */
  page: "map" | "overview";
}

/** The longest custom range: a month of 1 Hz samples is still only max_points on the wire. */
export const MAX_CUSTOM_MS = 31 * 86_400_000;

export const DEFAULT_VIEW: Readonly<ViewState> = {
  vehicle: null, q: "", statuses: [], sort: "status", range: "1h", from: null, to: null,
  replay: false, page: "map",
};

const RANGE_MS: Record<Range, number> = {
  "30m": 30 * 60_000, "1h": 3_600_000, "6h": 6 * 3_600_000, "24h": 24 * 3_600_000,
  "7d": 7 * 86_400_000,
};

export function rangeMs(range: Range): number {
  return RANGE_MS[range];
}

/** The view's time range as [from, to] in epoch ms: the custom one, else the preset up to now. */
export function timeRange(view: ViewState, now: number): [number, number] {
  if (view.from != null && view.to != null) return [view.from, view.to];
  return [now - RANGE_MS[view.range], now];
}

function instant(text: string | null): number | null {
  if (!text) return null;
  const t = /^\d+$/.test(text) ? Number(text) : Date.parse(text);
  return Number.isFinite(t) ? t : null;
}

function oneOf<T extends string>(allowed: readonly T[], value: string | null): T | undefined {
  return (allowed as readonly string[]).includes(value ?? "") ? (value as T) : undefined;
}

export function parseView(hash: string): ViewState {
  const params = new URLSearchParams(hash.replace(/^#/, ""));
  const statuses = (params.get("status") ?? "").split(",")
    .map((s) => oneOf(STATUS_FILTERS, s))
    .filter((s): s is StatusFilter => s !== undefined);
  return {
    vehicle: params.get("vehicle") || null,
    q: (params.get("q") ?? "").slice(0, 200),
    statuses: [...new Set(statuses)],
    sort: oneOf(SORT_KEYS, params.get("sort")) ?? DEFAULT_VIEW.sort,
    range: oneOf(RANGES, params.get("range")) ?? DEFAULT_VIEW.range,
    ...customRange(instant(params.get("from")), instant(params.get("to"))),
    replay: params.get("replay") === "1",
    page: params.get("page") === "overview" ? "overview" : "map",
  };
}

/** Both ends, in order, not too long; anything else is no custom range. */
function customRange(from: number | null, to: number | null): { from: number | null; to: number | null } {
  if (from == null || to == null || from >= to || to - from > MAX_CUSTOM_MS) return { from: null, to: null };
  return { from, to };
}

/** The fragment of a view; defaults are left out so that links stay short. */
export function formatView(view: ViewState): string {
  const params = new URLSearchParams();
  if (view.vehicle) params.set("vehicle", view.vehicle);
  if (view.q) params.set("q", view.q);
  if (view.statuses.length) params.set("status", view.statuses.join(","));
  if (view.sort !== DEFAULT_VIEW.sort) params.set("sort", view.sort);
  if (view.range !== DEFAULT_VIEW.range) params.set("range", view.range);
  if (view.from != null && view.to != null) {
    params.set("from", new Date(view.from).toISOString());
    params.set("to", new Date(view.to).toISOString());
  }
  if (view.replay) params.set("replay", "1");
  if (view.page !== "map") params.set("page", view.page);
  const text = params.toString();
  return text ? `#${text}` : "";
}
