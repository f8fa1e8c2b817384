// History replay: one vehicle over a range. The track comes downsampled from the hypertable
// (GET /telemetry with max_points, so a week loads as fast as an hour), the trips and stops
// from /trips, the events from the event lists. A timeline plays, pauses, changes speed and
// scrubs; the marker moves along the track, events are pinned on the map and the timeline,
// and a speed/rpm chart follows the scrubber.

import * as L from "leaflet";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

import type { Api } from "./api";
import { byId, clock, el, fmt } from "./dom";
import { describe } from "./events";
import { fetchEvents } from "./history";
import {
  overlapping, positionAt, ReplayClock, samplesFrom, stopsFrom, tripsFrom, utcDays,
  type ReplaySample, type Stop, type Trip,
} from "./replay-model";
import type { FleetEvent } from "./types";
import { MAX_CUSTOM_MS, RANGES, type Range } from "./view";

/** Points asked of the API for the whole range: enough for a smooth line at any zoom. */
const MAX_POINTS = 2000;
export const SPEEDS = [1, 10, 60, 300, 1800] as const;
const SCRUB_STEPS = 1000;
const KIND_COLOURS: Record<FleetEvent["kind"], string> = {
  geofence: "#2456a6", vehicle: "#e8710a", anomaly: "#a142f4",
};

export interface ReplayTarget {
  vehicleId: string;
  code: string;
  from: number;
  to: number;
}

export interface ReplayHandlers {
  /** The dispatcher picked another range: a preset, or a custom from/to. */
  range(range: Range | { from: number; to: number }): void;
  close(): void;
}

interface Loaded {
  samples: ReplaySample[];
  trips: Trip[];
  stops: Stop[];
  events: FleetEvent[];
  source: string;
  /** Trips, stops and events have arrived. */
  complete: boolean;
}

export class Replay {
  private readonly root = byId("replay");
  private readonly playButton = byId<HTMLButtonElement>("replay-play");
  private readonly speedSelect = byId<HTMLSelectElement>("replay-speed");
  private readonly scrub = byId<HTMLInputElement>("replay-scrub");
  private readonly timeLabel = byId("replay-time");
  private readonly ticks = byId("replay-ticks");
  private readonly rangeSelect = byId<HTMLSelectElement>("replay-range");
  private readonly fromInput = byId<HTMLInputElement>("replay-from");
  private readonly toInput = byId<HTMLInputElement>("replay-to");
  private readonly customForm = byId<HTMLFormElement>("replay-custom");
  private readonly rangeError = byId("replay-range-error");
  private readonly summary = byId("replay-summary");
  private readonly spans = byId("replay-spans");
  private readonly chartBox = byId("replay-chart");
  private readonly layer = L.layerGroup();
  private readonly marker = L.circleMarker([0, 0], {
    radius: 9, color: "#ffffff", weight: 3, fillColor: "#d93025", fillOpacity: 1,
  });
  private chart: uPlot | null = null;
  private clock: ReplayClock | null = null;
  private data: Loaded | null = null;
  private frame = 0;
  private lastFrameMs = 0;
  /** Bumped on every load, so that an answer for an older request is dropped. */
  private generation = 0;
  target: ReplayTarget | null = null;

  constructor(private readonly api: Api, private readonly map: L.Map,
              private readonly handlers: ReplayHandlers) {
    for (const s of SPEEDS) this.speedSelect.append(el("option", { value: s }, `${s}×`));
    this.speedSelect.value = "60";
    for (const r of RANGES) this.rangeSelect.append(el("option", { value: r }, `last ${r}`));
    this.rangeSelect.append(el("option", { value: "custom" }, "custom…"));
    this.scrub.max = String(SCRUB_STEPS);
    this.playButton.addEventListener("click", () => this.toggle());
    this.speedSelect.addEventListener("change", () => {
      if (this.clock) this.clock.speed = Number(this.speedSelect.value);
    });
    this.scrub.addEventListener("input", () => {
      if (!this.clock) return;
      this.clock.seek(this.clock.from + (Number(this.scrub.value) / SCRUB_STEPS) *
                      (this.clock.to - this.clock.from));
      this.draw();
    });
    this.rangeSelect.addEventListener("change", () => {
      const value = this.rangeSelect.value;
      this.customForm.hidden = value !== "custom";
      if (value !== "custom") this.handlers.range(value as Range);
    });
    this.customForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.applyCustom();
    });
    byId("replay-close").addEventListener("click", () => this.handlers.close());
    this.spans.addEventListener("click", (ev) => {
      const item = (ev.target as HTMLElement).closest<HTMLElement>("[data-t]");
      if (item?.dataset.t) this.seek(Number(item.dataset.t));
    });
    this.ticks.addEventListener("click", (ev) => {
      const tick = (ev.target as HTMLElement).closest<HTMLElement>("[data-t]");
      if (tick?.dataset.t) this.seek(Number(tick.dataset.t));
    });
  }

  get open(): boolean {
    return this.target != null;
  }

  /** What the replay shows, for tests and tooling. */
  get state(): { t: number; playing: boolean; points: number; source: string; complete: boolean;
                 position: { lat: number; lon: number } | null } | null {
    if (!this.clock || !this.data) return null;
    return { t: this.clock.t, playing: this.clock.playing, points: this.data.samples.length,
             source: this.data.source, complete: this.data.complete,
             position: positionAt(this.data.samples, this.clock.t) };
  }

  async show(target: ReplayTarget, range: Range | "custom"): Promise<void> {
    const generation = ++this.generation;
    this.target = target;
    this.root.hidden = false;
    this.rangeSelect.value = range;
    this.customForm.hidden = range !== "custom";
    this.fromInput.value = localInput(target.from);
    this.toInput.value = localInput(target.to);
    this.summary.textContent = `loading ${target.code}…`;
    this.pause();
    this.layer.clearLayers();
    this.layer.addTo(this.map);
    this.map.invalidateSize();  // the bar took room from the map
    // The track and the chart first (one request, downsampled by the server); the trips,
    // stops and events (a scan of each day's samples for trips) are added when they come.
    const seriesRequest = this.loadSeries(target);  // asked first: it is what is drawn first
    const details = this.loadDetails(target);
    const series = await seriesRequest;
    if (generation !== this.generation) return;
    const data: Loaded = { samples: samplesFrom(series.points), trips: [], stops: [], events: [],
                           source: series.source, complete: false };
    this.data = data;
    this.clock = new ReplayClock(target.from, target.to);
    this.clock.speed = Number(this.speedSelect.value);
    this.drawTrack(data);
    this.drawChart(data, target);
    this.summary.textContent = summaryOf(data);
    // Start where the vehicle first has a position, not in an empty stretch.
    const first = data.samples.find((s) => s.lat != null);
    this.clock.seek(first ? first.t : target.from);
    this.draw();
    this.root.dataset.ready = "true";
    const { trips, stops, events } = await details;
    if (generation !== this.generation) return;
    Object.assign(data, { trips, stops, events, complete: true });
    this.drawPins(data);
    this.drawTimeline(data, target);
    this.summary.textContent = summaryOf(data);
    this.root.dataset.complete = "true";
  }

  close(): void {
    this.generation += 1;
    this.pause();
    this.target = null;
    this.data = null;
    this.clock = null;
    this.root.hidden = true;
    delete this.root.dataset.ready;
    delete this.root.dataset.complete;
    this.layer.remove();
    this.map.invalidateSize();
    this.chart?.destroy();
    this.chart = null;
  }

  seek(t: number): void {
    if (!this.clock) return;
    this.clock.seek(t);
    this.draw();
  }

  private loadSeries(target: ReplayTarget): Promise<{ source: string; points: Record<string, unknown>[] }> {
    return this.api.get(`/api/vehicles/${target.vehicleId}/telemetry?${rangeQuery(target)}` +
                        `&max_points=${MAX_POINTS}`);
  }

  private async loadDetails(target: ReplayTarget): Promise<Pick<Loaded, "trips" | "stops" | "events">> {
    const base = `/api/vehicles/${target.vehicleId}`;
    const [days, events] = await Promise.all([
      Promise.all(utcDays(target.from, target.to).map((day) =>
        this.api.get<{ trips: Record<string, unknown>[]; stops: Record<string, unknown>[] }>(
          `${base}/trips?date=${day}`))),
      fetchEvents(this.api, target.from, target.to, target.vehicleId),
    ]);
    return {
      trips: overlapping(days.flatMap((d) => tripsFrom(d.trips)), target.from, target.to),
      stops: overlapping(days.flatMap((d) => stopsFrom(d.stops)), target.from, target.to),
      events: events.sort((a, b) => a.t_ms - b.t_ms),
    };
  }

  private applyCustom(): void {
    const from = Date.parse(this.fromInput.value);
    const to = Date.parse(this.toInput.value);
    let error = "";
    if (!Number.isFinite(from) || !Number.isFinite(to)) error = "give both a start and an end";
    else if (from >= to) error = "the start must be before the end";
    else if (to - from > MAX_CUSTOM_MS) error = "at most 31 days";
    this.rangeError.textContent = error;
    if (!error) this.handlers.range({ from, to });
  }

  private toggle(): void {
    if (!this.clock) return;
    if (this.clock.playing) {
      this.pause();
      return;
    }
    this.clock.play();
    this.playButton.textContent = "Pause";
    this.lastFrameMs = performance.now();
    this.frame = requestAnimationFrame((now) => this.tick(now));
  }

  private pause(): void {
    if (this.clock) this.clock.playing = false;
    cancelAnimationFrame(this.frame);
    this.frame = 0;
    this.playButton.textContent = "Play";
  }

  private tick(now: number): void {
    if (!this.clock) return;
    this.clock.advance(now - this.lastFrameMs);
    this.lastFrameMs = now;
    this.draw();
    if (this.clock.playing) this.frame = requestAnimationFrame((t) => this.tick(t));
    else this.pause();
  }

  private draw(): void {
    if (!this.clock || !this.data) return;
    const t = this.clock.t;
    this.scrub.value = String(Math.round(this.clock.fraction * SCRUB_STEPS));
    this.timeLabel.textContent = new Date(t).toLocaleString();
    const p = positionAt(this.data.samples, t);
    if (p) {
      this.marker.setLatLng([p.lat, p.lon]);
      if (!this.layer.hasLayer(this.marker)) this.layer.addLayer(this.marker);
    } else {
      this.layer.removeLayer(this.marker);
    }
    if (this.chart) {
      const left = this.chart.valToPos(t / 1000, "x");
      if (Number.isFinite(left)) this.chart.setCursor({ left, top: 10 }, false);
    }
  }

  private drawTrack(data: Loaded): void {
    const line = data.samples.filter((s) => s.lat != null && s.lon != null)
      .map((s) => [s.lat, s.lon] as L.LatLngTuple);
    if (line.length) {
      const track = L.polyline(line, { color: "#2456a6", weight: 3, opacity: 0.8 });
      this.layer.addLayer(track);
      // Not animated: a zoom animation ignores any other view change until it ends.
      this.map.fitBounds(track.getBounds().pad(0.2), { animate: false });
    }
  }

  private drawPins(data: Loaded): void {
    for (const s of data.stops) {
      if (s.lat == null || s.lon == null) continue;
      this.layer.addLayer(L.circleMarker([s.lat, s.lon], {
        radius: 6, color: "#1d2430", weight: 2, fillColor: "#ffffff", fillOpacity: 1,
      }).bindTooltip(`stop ${clock(s.start)}–${clock(s.end)}`));
    }
    for (const e of data.events) {
      if (e.lat == null || e.lon == null) continue;
      this.layer.addLayer(L.circleMarker([e.lat, e.lon], {
        radius: 5, color: KIND_COLOURS[e.kind], weight: 2, fillColor: "#ffffff", fillOpacity: 1,
      }).bindTooltip(`${clock(e.t_ms)} ${describe(e)}`).on("click", () => this.seek(e.t_ms)));
    }
  }

  private drawTimeline(data: Loaded, target: ReplayTarget): void {
    const span = target.to - target.from;
    this.ticks.replaceChildren(...data.events.map((e) =>
      el("button", { type: "button", class: `tick ${e.kind}`, "data-t": e.t_ms,
                     title: `${clock(e.t_ms)} ${describe(e)}`,
                     style: `left:${((e.t_ms - target.from) / span) * 100}%` })));
    const items = [
      ...data.trips.map((t) => ({ t: t.start, node: el("li", { class: "trip", "data-t": t.start },
        el("b", {}, "trip "), `${clock(t.start)}–${clock(t.end)} · ${fmt(t.distanceKm, "km", 1)} · max ${fmt(t.maxSpeedKph, "km/h")}`) })),
      ...data.stops.map((s) => ({ t: s.start, node: el("li", { class: "stop", "data-t": s.start },
        el("b", {}, "stop "), `${clock(s.start)}–${clock(s.end)}`) })),
      ...data.events.map((e) => ({ t: e.t_ms, node: el("li", { class: `event ${e.kind}`, "data-t": e.t_ms },
        el("b", {}, `${e.kind} `), `${clock(e.t_ms)} ${describe(e)}`) })),
    ].sort((a, b) => a.t - b.t);
    this.spans.replaceChildren(...items.map((i) => i.node));
    if (!items.length) this.spans.append(el("li", { class: "empty" }, "no trips, stops or events in range"));
  }

  private drawChart(data: Loaded, target: ReplayTarget): void {
    this.chart?.destroy();
    const xs = data.samples.map((s) => s.t / 1000);
    const width = Math.max(200, this.chartBox.clientWidth);
    const opts: uPlot.Options = {
      width, height: 120, legend: { show: true },
      scales: { x: { time: true, min: target.from / 1000, max: target.to / 1000 } },
      axes: [{}, { label: "km/h", size: 50 }, { side: 1, scale: "rpm", label: "rpm", size: 50,
                                              grid: { show: false } }],
      series: [
        {},
        { label: "speed", stroke: "#1e8e3e", width: 1.5, value: (_u, v) => fmt(v, "km/h") },
        { label: "rpm", scale: "rpm", stroke: "#8a94a3", width: 1, value: (_u, v) => fmt(v) },
        { label: "fuel", scale: "%", stroke: "#f29900", width: 1, value: (_u, v) => fmt(v, "%") },
      ],
      cursor: { drag: { x: false, y: false } },
    };
    this.chart = new uPlot(opts, [xs, data.samples.map((s) => s.speed),
                                  data.samples.map((s) => s.rpm),
                                  data.samples.map((s) => s.fuel)], this.chartBox);
    // A click on the chart moves the replay there.
    this.chart.over.addEventListener("click", (ev) => {
      if (this.chart) this.seek(this.chart.posToVal(ev.offsetX, "x") * 1000);
    });
  }
}

function summaryOf(data: Loaded): string {
  const source = data.source === "telemetry" ? "samples" : `from ${data.source}`;
  const points = `${plural(data.samples.length, "point")} (${source})`;
  if (!data.complete) return `${points} · trips and events loading…`;
  const km = data.trips.reduce((sum, t) => sum + t.distanceKm, 0);
  return `${points} · ${plural(data.trips.length, "trip")}, ` +
    `${fmt(km, "km", 1)} · ${plural(data.stops.length, "stop")} · ${plural(data.events.length, "event")}`;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

function rangeQuery(target: ReplayTarget): string {
  return `from=${encodeURIComponent(new Date(target.from).toISOString())}` +
    `&to=${encodeURIComponent(new Date(target.to).toISOString())}`;
}

/** An instant as a datetime-local input's value (local time, minutes). */
function localInput(t: number): string {
  const d = new Date(t - new Date(t).getTimezoneOffset() * 60_000);
  return d.toISOString().slice(0, 16);
}
