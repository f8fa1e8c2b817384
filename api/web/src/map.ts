// The map: vehicles as circles on one canvas (thousands redraw in a frame, where one DOM
// marker each would not), coloured by status with a red ring while alerting; geofences; the
// selected vehicle's track. With no tile URL (offline) a neutral grid stands in for the base map.

import * as L from "leaflet";

import type { MotionStatus } from "./fleet";
import { timings } from "./perf";
import type { FenceFeature, MapConfig } from "./types";

export const STATUS_COLOURS: Record<MotionStatus, string> = {
  moving: "#1e8e3e", idle: "#f29900", off: "#80868b", offline: "#3c4043",
};
const ALERT_COLOUR = "#d93025";
const FENCE_COLOUR = "#2456a6";
const DEFAULT_VIEW: L.LatLngTuple = [52.52, 13.405];

interface Marker {
  layer: L.CircleMarker;
  status: MotionStatus;
  alerting: boolean;
  /** The look last applied, so that a position update redraws the style only on a change. */
  style: string;
}

export class FleetMap {
  readonly map: L.Map;
  private readonly renderer = L.canvas({ padding: 0.3 });
  private readonly markers = new Map<string, Marker>();
  private readonly fenceLayer = L.layerGroup();
  private track: L.Polyline | null = null;
  private selected: string | null = null;

  constructor(container: HTMLElement, config: MapConfig,
              private readonly onSelect: (vehicleId: string) => void) {
    this.map = L.map(container, { preferCanvas: true, renderer: this.renderer })
      .setView(DEFAULT_VIEW, 12);
    if (config.tiles_url) {
      L.tileLayer(config.tiles_url, { maxZoom: 19, attribution: config.tiles_attribution })
        .addTo(this.map);
    } else {
      container.classList.add("no-tiles");
      this.map.attributionControl.addAttribution(
        '<span class="no-tiles-note">no base map (offline mode)</span>');
    }
    this.fenceLayer.addTo(this.map);
    timePainting(this.renderer);
  }

  showFences(features: readonly FenceFeature[], fit = true): void {
    this.fenceLayer.clearLayers();
    const bounds = L.latLngBounds([]);
    for (const f of features) {
      const p = f.properties;
      const colour = p.speed_limit_kph ? ALERT_COLOUR : FENCE_COLOUR;
      const style = { color: colour, weight: 2, fillOpacity: 0.08, renderer: this.renderer };
      let layer: L.Circle | L.Polyline | L.GeoJSON;
      if (p.kind === "circle") {
        const [lon, lat] = f.geometry.coordinates as [number, number];
        layer = L.circle([lat, lon], { ...style, radius: p.radius_m ?? 0 });
      } else if (p.kind === "corridor") {
        const coords = f.geometry.coordinates as [number, number][];
        layer = L.polyline(coords.map(([lon, lat]) => [lat, lon]),
                           { color: colour, opacity: 0.3, weight: 12, renderer: this.renderer });
      } else {
        layer = L.geoJSON(f, { style: () => style });
      }
      const limit = p.speed_limit_kph ? ` · ${p.speed_limit_kph} km/h` : "";
      layer.bindTooltip(`${p.name}${limit}`);
      layer.addTo(this.fenceLayer);
      bounds.extend(layer.getBounds());
    }
    // Not animated: a zoom animation ignores any other view change until it ends.
    if (fit && bounds.isValid()) this.map.fitBounds(bounds.pad(0.3), { animate: false });
  }

  /** Place or move a vehicle. */
  place(id: string, code: string, lat: number, lon: number, status: MotionStatus,
        alerting: boolean): void {
    let m = this.markers.get(id);
    if (!m) {
      const layer = L.circleMarker([lat, lon], { renderer: this.renderer });
      layer.bindTooltip(code, { direction: "top", offset: [0, -6] });
      layer.on("click", () => this.onSelect(id));
      layer.addTo(this.map);
      m = { layer, status, alerting, style: "" };
      this.markers.set(id, m);
    } else {
      m.layer.setLatLng([lat, lon]);
      m.status = status;
      m.alerting = alerting;
    }
    this.restyle(id, m);
  }

  private restyle(id: string, m: Marker): void {
    const selected = id === this.selected;
    const style = `${m.status}|${m.alerting}|${selected}`;
    if (m.style === style) return;
    m.style = style;
    m.layer.setStyle(look(m.status, m.alerting, selected));
    m.layer.setRadius(selected ? 9 : 6);
    if (selected) m.layer.bringToFront();
  }

  /** Show the whole fleet (and the fences): once, when the first snapshot has arrived. */
  fitFleet(): void {
    const bounds = L.latLngBounds([]);
    for (const m of this.markers.values()) bounds.extend(m.layer.getLatLng());
    for (const layer of this.fenceLayer.getLayers()) {
      if (layer instanceof L.Path && "getBounds" in layer) {
        bounds.extend((layer as L.Polyline).getBounds());
      }
    }
    if (bounds.isValid()) this.map.fitBounds(bounds.pad(0.1), { animate: false, maxZoom: 16 });
  }

  get markerCount(): number {
    return this.markers.size;
  }

  /** Where a vehicle is drawn, in pixels of the map's container (for tests and tooling). */
  screenPoint(id: string): { x: number; y: number } | null {
    const m = this.markers.get(id);
    if (!m) return null;
    const p = this.map.latLngToContainerPoint(m.layer.getLatLng());
    return { x: p.x, y: p.y };
  }

  select(id: string | null): void {
    const before = this.selected;
    this.selected = id;
    for (const key of [before, id]) {
      const m = key ? this.markers.get(key) : undefined;
      if (key && m) this.restyle(key, m);
    }
    const m = id ? this.markers.get(id) : undefined;
    if (m) this.map.panTo(m.layer.getLatLng());
  }

  focus(lat: number, lon: number): void {
    this.map.setView([lat, lon], Math.max(this.map.getZoom(), 15));
  }

  showTrack(points: readonly [number, number][]): void {
    this.clearTrack();
    this.track = L.polyline(points.map(([lon, lat]) => [lat, lon] as L.LatLngTuple),
                            { color: FENCE_COLOUR, weight: 3, opacity: 0.7, renderer: this.renderer })
      .addTo(this.map);
  }

  extendTrack(lat: number, lon: number): void {
    this.track?.addLatLng([lat, lon]);
  }

  clearTrack(): void {
    this.track?.remove();
    this.track = null;
  }
}

function look(status: MotionStatus, alerting: boolean, selected: boolean): L.CircleMarkerOptions {
  return {
    radius: selected ? 9 : 6, fillColor: STATUS_COLOURS[status], fillOpacity: 0.95,
    color: alerting ? ALERT_COLOUR : selected ? "#1d2430" : "#ffffff",
    weight: alerting || selected ? 3 : 1,
  };
}

/** Time the canvas renderer's paint (Leaflet's private `_redraw`, run in its own animation
 * frame callback), so that `fleet bench map` counts it in an update's cost. */
function timePainting(renderer: L.Canvas): void {
  const r = renderer as unknown as { _redraw?: () => void };
  const paint = r._redraw;
  if (typeof paint !== "function") return;  // another Leaflet version: not measured
  r._redraw = function (this: unknown) {
    const started = performance.now();
    paint.call(this);
    timings.add(timings.drawMs, performance.now() - started);
  };
}
