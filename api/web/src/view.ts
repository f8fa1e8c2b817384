// What the dispatcher is looking at, kept in the URL's fragment so that a link pasted to a
// colleague opens the same view: `#vehicle=van-007&q=b-ft&status=moving,alerting&sort=speed
// &range=1h`. Unknown or malformed values fall back to the defaults instead of failing.

import { SORT_KEYS, STATUS_FILTERS, type SortKey, type StatusFilter } from "./fleet";

export const RANGES = ["30m", "1h", "6h", "24h"] as const;
export type Range = (typeof RANGES)[number];

export interface ViewState {
  /** The selected vehicle's code (readable in a link), or null. */
  vehicle: string | null;
  q: string;
  statuses: StatusFilter[];
  sort: SortKey;
  /** How far back the panel's track and the event inbox go. */
  range: Range;
}

export const DEFAULT_VIEW: Readonly<ViewState> = {
  vehicle: null, q: "", statuses: [], sort: "status", range: "1h",
};

const RANGE_MS: Record<Range, number> = {
  "30m": 30 * 60_000, "1h": 3_600_000, "6h": 6 * 3_600_000, "24h": 24 * 3_600_000,
};

export function rangeMs(range: Range): number {
  return RANGE_MS[range];
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
  };
}

/** The fragment of a view; defaults are left out so that links stay short. */
export function formatView(view: ViewState): string {
  const params = new URLSearchParams();
  if (view.vehicle) params.set("vehicle", view.vehicle);
  if (view.q) params.set("q", view.q);
  if (view.statuses.length) params.set("status", view.statuses.join(","));
  if (view.sort !== DEFAULT_VIEW.sort) params.set("sort", view.sort);
  if (view.range !== DEFAULT_VIEW.range) params.set("range", view.range);
  const text = params.toString();
  return text ? `#${text}` : "";
}
