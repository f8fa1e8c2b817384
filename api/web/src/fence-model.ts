// The geofence editor, the pure part: the form's values, checked as the API checks them
// (api/routes/geofences.py), turned into the GeoJSON Feature the API takes, and the place an
// API geometry error names ("Self-intersection[13.05 52.05]").

export type FenceKind = "polygon" | "circle" | "corridor";

export interface FenceForm {
  name: string;
  category: string;
  speedLimitKph: string;
  dwellS: string;
  /** Empty: the fleet's setting (geofence.debounce_s). */
  debounceS: string;
  corridorWidthM: string;
  alertOnEntry: boolean;
  alertOnExit: boolean;
  isActive: boolean;
}

export type FormErrors = Partial<Record<keyof FenceForm, string>>;

export interface FenceGeometry {
  type: string;
  coordinates: unknown;
}

/** What the API says about a fence, as the form shows it. */
export interface FenceProperties {
  name: string;
  kind: FenceKind;
  category?: string | null;
  speed_limit_kph?: number | null;
  dwell_s?: number | null;
  debounce_s?: number | null;
  corridor_width_m?: number | null;
  radius_m?: number | null;
  alert_on_entry?: boolean;
  alert_on_exit?: boolean;
  is_active?: boolean;
}

const INT4_MAX = 2 ** 31 - 1;
export const DEFAULT_CORRIDOR_WIDTH_M = 50;

export function formOf(p: FenceProperties | null): FenceForm {
  const text = (v: number | string | null | undefined) => (v == null ? "" : String(v));
  return {
    name: p?.name ?? "", category: p?.category ?? "",
    speedLimitKph: text(p?.speed_limit_kph), dwellS: text(p?.dwell_s), debounceS: text(p?.debounce_s),
    corridorWidthM: text(p?.corridor_width_m ?? DEFAULT_CORRIDOR_WIDTH_M),
    alertOnEntry: p?.alert_on_entry ?? false, alertOnExit: p?.alert_on_exit ?? false,
    isActive: p?.is_active ?? true,
  };
}

function numberIn(text: string, lo: number, hi: number, integer: boolean): number | string {
  const v = Number(text.trim());
  if (text.trim() === "" || !Number.isFinite(v)) return "a number";
  if (integer && !Number.isInteger(v)) return "a whole number";
  if (v < lo || v > hi) return `between ${lo} and ${hi}`;
  return v;
}

/** The form's errors, by field (empty when it can be sent). */
export function checkForm(form: FenceForm, kind: FenceKind): FormErrors {
  const errors: FormErrors = {};
  const name = form.name.trim();
  if (!name) errors.name = "a name is needed";
  const optional: [keyof FenceForm, number, number, boolean][] = [
    ["speedLimitKph", 1, 1000, false], ["dwellS", 1, INT4_MAX, true], ["debounceS", 0, INT4_MAX, true],
  ];
  for (const [field, lo, hi, integer] of optional) {
    const text = String(form[field]);
    if (text.trim() === "") continue;
    const v = numberIn(text, lo, hi, integer);
    if (typeof v === "string") errors[field] = v;
  }
  if (kind === "corridor") {
    const v = numberIn(form.corridorWidthM, 0.01, 20_000_000, false);
    if (typeof v === "string") errors.corridorWidthM = v;
  }
  return errors;
}

function optionalNumber(text: string): number | null {
  return text.trim() === "" ? null : Number(text);
}

/** The Feature for POST /api/geofences or PUT /api/geofences/{id}. Check the form first. */
export function fenceFeature(form: FenceForm, kind: FenceKind, geometry: FenceGeometry,
                             radiusM: number | null = null): Record<string, unknown> {
  const properties: Record<string, unknown> = {
    name: form.name.trim(), kind, category: form.category.trim() || null,
    speed_limit_kph: optionalNumber(form.speedLimitKph), dwell_s: optionalNumber(form.dwellS),
    debounce_s: optionalNumber(form.debounceS), alert_on_entry: form.alertOnEntry,
    alert_on_exit: form.alertOnExit, is_active: form.isActive,
  };
  if (kind === "circle") properties.radius_m = radiusM;
  if (kind === "corridor") properties.corridor_width_m = Number(form.corridorWidthM);
  return { type: "Feature", geometry, properties };
}

/** The position an API geometry error names: "...Self-intersection[13.05 52.05]" (lon lat). */
export function errorPlace(message: string): { lat: number; lon: number } | null {
  const m = /\[(-?\d+(?:\.\d+)?(?:e-?\d+)?) (-?\d+(?:\.\d+)?(?:e-?\d+)?)\]/i.exec(message);
  if (!m) return null;
  const lon = Number(m[1]);
  const lat = Number(m[2]);
  if (!Number.isFinite(lon) || !Number.isFinite(lat) || Math.abs(lat) > 90 || Math.abs(lon) > 180) {
    return null;
  }
  return { lat, lon };
}

/** Which form field an API error's `field` concerns, if any. */
export function formField(apiField: string | undefined): keyof FenceForm | null {
  const map: Record<string, keyof FenceForm> = {
    "properties.name": "name", "properties.category": "category",
    "properties.speed_limit_kph": "speedLimitKph", "properties.dwell_s": "dwellS",
    "properties.debounce_s": "debounceS", "properties.corridor_width_m": "corridorWidthM",
    name: "name",
  };
  return apiField ? map[apiField] ?? null : null;
}
