// History replay, the pure part: the API's telemetry series as samples, where the vehicle was
// at any instant (interpolated between fixes), and the replay clock. No DOM, no map.

/** One point of GET /api/vehicles/{id}/telemetry: a raw sample or a time bucket. */
export interface ReplaySample {
  t: number;
  lat: number | null;
  lon: number | null;
  speed: number | null;
  rpm: number | null;
  fuel: number | null;
}

export interface Span {
  start: number;
  end: number;
}

export interface Trip extends Span {
  distanceKm: number;
  maxSpeedKph: number;
}

export interface Stop extends Span {
  lat: number | null;
  lon: number | null;
}

type Row = Record<string, unknown>;

function num(row: Row, ...keys: string[]): number | null {
  for (const k of keys) {
    const v = row[k];
    if (typeof v === "number" && Number.isFinite(v)) return v;
  }
  return null;
}

/** Raw samples carry speed_kph/rpm, time buckets avg_speed_kph/avg_rpm: read either. */
export function samplesFrom(points: readonly Row[]): ReplaySample[] {
  return points
    .map((p) => ({
      t: Date.parse(String(p.time)), lat: num(p, "lat"), lon: num(p, "lon"),
      speed: num(p, "speed_kph", "avg_speed_kph"), rpm: num(p, "rpm", "avg_rpm"),
      fuel: num(p, "fuel_level_pct"),
    }))
    .filter((s) => Number.isFinite(s.t))
    .sort((a, b) => a.t - b.t);
}

export function tripsFrom(rows: readonly Row[]): Trip[] {
  return rows.map((r) => ({
    start: Date.parse(String(r.start_time)), end: Date.parse(String(r.end_time)),
    distanceKm: num(r, "distance_km") ?? 0, maxSpeedKph: num(r, "max_speed_kph") ?? 0,
  }));
}

export function stopsFrom(rows: readonly Row[]): Stop[] {
  return rows.map((r) => ({
    start: Date.parse(String(r.start_time)), end: Date.parse(String(r.end_time)),
    lat: num(r, "lat"), lon: num(r, "lon"),
  }));
}

/** Those of `spans` that overlap [from, to]. */
export function overlapping<T extends Span>(spans: readonly T[], from: number, to: number): T[] {
  return spans.filter((s) => s.end >= from && s.start <= to);
}

/** The index of the last sample at or before t; -1 when t is before the first. */
export function indexAt(samples: readonly ReplaySample[], t: number): number {
  let lo = 0;
  let hi = samples.length - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if ((samples[mid] as ReplaySample).t <= t) {
      found = mid;
      lo = mid + 1;
    } else {
      hi = mid - 1;
    }
  }
  return found;
}

/** Where the vehicle was at t: between two fixes, on the straight line between them (fixes are
 * seconds apart, so the straight line and the great circle do not differ visibly); after the
 * last fix, where it was last seen; before the first, unknown (null). Samples without a
 * position are skipped. */
export function positionAt(samples: readonly ReplaySample[], t: number
                          ): { lat: number; lon: number } | null {
  let i = indexAt(samples, t);
  while (i >= 0 && (samples[i] as ReplaySample).lat == null) i -= 1;
  if (i < 0) return null;
  const a = samples[i] as ReplaySample;
  let j = i + 1;
  while (j < samples.length && (samples[j] as ReplaySample).lat == null) j += 1;
  const b = samples[j];
  if (!b) return pos(a);  // after the last fix: where it was last seen
  const f = b.t === a.t ? 0 : (t - a.t) / (b.t - a.t);
  return { lat: (a.lat as number) + f * ((b.lat as number) - (a.lat as number)),
           lon: (a.lon as number) + f * ((b.lon as number) - (a.lon as number)) };
}

function pos(s: ReplaySample): { lat: number; lon: number } {
  return { lat: s.lat as number, lon: s.lon as number };
}

/** The replay's clock: plays a range at a speed, stops at its end. */
export class ReplayClock {
  t: number;
  playing = false;
  speed = 60;

  constructor(readonly from: number, readonly to: number) {
    this.t = from;
  }

  /** Move the clock by `elapsedMs` of wall time; returns the new instant. */
  advance(elapsedMs: number): number {
    if (!this.playing) return this.t;
    this.t = Math.min(this.to, this.t + elapsedMs * this.speed);
    if (this.t >= this.to) this.playing = false;
    return this.t;
  }

  seek(t: number): number {
    this.t = Math.max(this.from, Math.min(this.to, t));
    return this.t;
  }

  /** Start playing (from the beginning again when at the end). */
  play(): void {
    if (this.t >= this.to) this.t = this.from;
    this.playing = true;
  }

  /** Where t lies in the range, 0..1. */
  get fraction(): number {
    return this.to > this.from ? (this.t - this.from) / (this.to - this.from) : 0;
  }
}

/** The UTC days (YYYY-MM-DD) that [from, to] touches: /trips answers per UTC day. */
export function utcDays(from: number, to: number): string[] {
  const days: string[] = [];
  const day = new Date(from);
  day.setUTCHours(0, 0, 0, 0);
  for (let t = day.getTime(); t <= to; t += 86_400_000) days.push(new Date(t).toISOString().slice(0, 10));
  return days;
}
