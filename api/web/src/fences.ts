// The geofence editor (fleet managers and admins): draw a polygon (holes cut into it), a circle
// or a corridor, edit vertices, move, delete; set name, category, speed limit, dwell, debounce
// and alerts. Saving goes to the API, whose refusals are shown where they apply: a geometry
// error at the vertex it names, a field error at the field. Drawing and editing are
// Leaflet-Geoman's.

// Leaflet first: evaluating it sets window.L, which Geoman extends when it is evaluated.
import * as L from "leaflet";
import "@geoman-io/leaflet-geoman-free";

import { ApiError, type Api } from "./api";
import { byId, el } from "./dom";
import {
  checkForm, errorPlace, fenceFeature, formField, formOf,
  type FenceForm, type FenceKind, type FenceProperties, type FormErrors,
} from "./fence-model";
import type { FenceFeature } from "./types";

const EDIT_STYLE: L.PathOptions = { color: "#2456a6", weight: 2, fillOpacity: 0.12 };
const SELECTED_STYLE: L.PathOptions = { color: "#e8710a", weight: 3, fillOpacity: 0.18 };
const SHAPES: Record<FenceKind, "Polygon" | "Circle" | "Line"> = {
  polygon: "Polygon", circle: "Circle", corridor: "Line",
};

interface Editable {
  id: string | null;
  kind: FenceKind;
  layer: L.Polygon | L.Circle | L.Polyline;
  properties: FenceProperties | null;
}

export class FenceEditor {
  private readonly root = byId("fence-editor");
  private readonly list = byId("fence-list");
  private readonly form = byId<HTMLFormElement>("fence-form");
  private readonly formTitle = byId("fence-form-title");
  private readonly message = byId("fence-message");
  private readonly holeButton = byId<HTMLButtonElement>("fence-hole");
  private readonly deleteButton = byId<HTMLButtonElement>("fence-delete");
  private readonly group = L.featureGroup();
  private readonly renderer = L.svg();
  private fences: Editable[] = [];
  private selected: Editable | null = null;
  private errorMarker: L.Marker | null = null;

  constructor(private readonly api: Api, private readonly map: L.Map,
              private readonly onChanged: () => Promise<void>) {
    attachGeoman(map);
    for (const kind of ["polygon", "circle", "corridor"] as const) {
      byId(`fence-draw-${kind}`).addEventListener("click", () => this.draw(kind));
    }
    this.holeButton.addEventListener("click", () => this.cutHole());
    this.deleteButton.addEventListener("click", () => void this.remove());
    byId("fence-cancel").addEventListener("click", () => this.deselect());
    byId("fence-done").addEventListener("click", () => void this.close());
    this.form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      void this.save();
    });
    this.map.on("pm:create", (e) => this.created(e.shape, e.layer));
    this.map.pm.setGlobalOptions({ allowSelfIntersection: true, snappable: false });
    // Geoman's own toolbar is not used: the editor's buttons start each mode.
    this.map.pm.removeControls();
  }

  get open(): boolean {
    return !this.root.hidden;
  }

  async show(): Promise<void> {
    this.root.hidden = false;
    this.group.addTo(this.map);
    await this.reload();
  }

  async close(): Promise<void> {
    this.deselect();
    this.map.pm.disableDraw();
    this.group.clearLayers();
    this.group.remove();
    this.root.hidden = true;
    await this.onChanged();
  }

  private async reload(): Promise<void> {
    const fc = await this.api.get<{ features: FenceFeature[] }>("/api/geofences");
    this.group.clearLayers();
    this.fences = fc.features.map((f) => this.editable(f)).filter((e): e is Editable => e != null);
    this.drawList();
  }

  private editable(f: FenceFeature): Editable | null {
    const p = f.properties as unknown as FenceProperties;
    const options = { ...EDIT_STYLE, renderer: this.renderer };
    let layer: Editable["layer"];
    if (p.kind === "circle") {
      const [lon, lat] = f.geometry.coordinates as [number, number];
      layer = L.circle([lat, lon], { ...options, radius: p.radius_m ?? 1 });
    } else if (p.kind === "corridor") {
      const coords = f.geometry.coordinates as [number, number][];
      layer = L.polyline<GeoJSON.LineString>(coords.map(([lon, lat]) => [lat, lon]), options);
    } else {
      const geo = L.geoJSON(f, { style: () => options });
      const first = geo.getLayers()[0];
      if (!(first instanceof L.Polygon)) return null;
      layer = first;
    }
    const e: Editable = { id: String(f.id), kind: p.kind, layer, properties: p };
    layer.bindTooltip(p.name);
    layer.on("click", () => this.clicked(e));
    layer.addTo(this.group);
    return e;
  }

  private drawList(): void {
    this.list.replaceChildren(...this.fences.map((f) => {
      const item = el("li", { "data-fence-id": f.id ?? "", class: f === this.selected ? "selected" : "" },
                      el("b", {}, f.properties?.name ?? "new fence"), ` ${f.kind}`);
      item.addEventListener("click", () => this.select(f));
      return item;
    }));
    if (!this.fences.length) this.list.append(el("li", { class: "empty" }, "no geofences yet"));
  }

  private draw(kind: FenceKind): void {
    this.deselect();
    this.say(kind === "polygon" ? "click the corners; click the first one again to close"
             : kind === "circle" ? "click the centre, then the edge"
             : "click along the corridor; click the last point again to finish");
    this.map.pm.enableDraw(SHAPES[kind], { allowSelfIntersection: true, templineStyle: SELECTED_STYLE,
                                           pathOptions: { ...SELECTED_STYLE, renderer: this.renderer } });
  }

  private created(shape: string, layer: L.Layer): void {
    const kind: FenceKind | undefined = shape === "Polygon" ? "polygon" : shape === "Circle" ? "circle"
      : shape === "Line" ? "corridor" : undefined;
    if (!kind || !(layer instanceof L.Path)) {
      layer.remove();
      return;
    }
    this.map.removeLayer(layer);
    const e: Editable = { id: null, kind, layer: layer as Editable["layer"], properties: null };
    layer.addTo(this.group);
    layer.on("click", () => this.clicked(e));
    this.fences.push(e);
    this.select(e);
  }

  /** A click on a fence selects it, unless it is a click of a drawing or a cut over it. */
  private clicked(e: Editable): void {
    if (this.map.pm.globalDrawModeEnabled() || this.map.pm.globalCutModeEnabled()) return;
    this.select(e);
  }

  private select(e: Editable): void {
    if (this.selected === e) return;
    this.deselect();
    this.selected = e;
    e.layer.setStyle(SELECTED_STYLE);
    e.layer.pm.enable({ allowSelfIntersection: true, draggable: true });
    this.form.hidden = false;
    this.formTitle.textContent = e.id ? `Edit ${e.properties?.name ?? ""}` : `New ${e.kind}`;
    this.fill(formOf(e.properties), e.kind);
    this.holeButton.hidden = e.kind !== "polygon";
    this.deleteButton.hidden = e.id == null;
    this.say("drag the vertices or the shape; save when done");
    this.drawList();
  }

  private deselect(): void {
    const e = this.selected;
    this.selected = null;
    this.clearErrors();
    this.form.hidden = true;
    this.map.pm.disableGlobalCutMode();
    if (!e) return;
    e.layer.pm.disable();
    e.layer.setStyle(EDIT_STYLE);
    if (e.id == null) {
      // An unsaved drawing is dropped.
      e.layer.remove();
      this.fences = this.fences.filter((f) => f !== e);
    }
    this.drawList();
  }

  private cutHole(): void {
    const e = this.selected;
    if (!e || e.kind !== "polygon") return;
    this.say("draw the hole inside the fence");
    // `layersToCut` (only this fence) is in Geoman's code but not in its type declarations.
    const options: L.PM.CutModeOptions & { layersToCut: L.Layer[] } = {
      layersToCut: [e.layer], allowSelfIntersection: false,
    };
    this.map.pm.enableGlobalCutMode(options);
    e.layer.once("pm:cut", (ev) => {
      // Geoman replaces the cut layer with a new one that has the hole.
      const cut = (ev as unknown as { layer: L.Layer }).layer;
      if (!(cut instanceof L.Polygon)) return;
      e.layer.remove();
      e.layer = cut;
      cut.addTo(this.group);
      cut.on("click", () => this.clicked(e));
      cut.pm.enable({ allowSelfIntersection: true, draggable: true });
      this.say("hole cut; save to keep it");
    });
  }

  private fill(form: FenceForm, kind: FenceKind): void {
    const input = (name: keyof FenceForm) => this.form.elements.namedItem(name) as HTMLInputElement;
    for (const [k, v] of Object.entries(form) as [keyof FenceForm, string | boolean][]) {
      if (typeof v === "boolean") input(k).checked = v;
      else input(k).value = v;
    }
    byId("fence-corridor-width").hidden = kind !== "corridor";
  }

  private read(): FenceForm {
    const value = (name: keyof FenceForm) => (this.form.elements.namedItem(name) as HTMLInputElement);
    return {
      name: value("name").value, category: value("category").value,
      speedLimitKph: value("speedLimitKph").value, dwellS: value("dwellS").value,
      debounceS: value("debounceS").value, corridorWidthM: value("corridorWidthM").value,
      alertOnEntry: value("alertOnEntry").checked, alertOnExit: value("alertOnExit").checked,
      isActive: value("isActive").checked,
    };
  }

  private async save(): Promise<void> {
    const e = this.selected;
    if (!e) return;
    this.clearErrors();
    const form = this.read();
    const errors = checkForm(form, e.kind);
    if (Object.keys(errors).length) {
      this.showErrors(errors);
      return;
    }
    const body = fenceFeature(form, e.kind, geometryOf(e),
                              e.layer instanceof L.Circle ? e.layer.getRadius() : null);
    try {
      const saved = await this.api.send<FenceFeature>(
        e.id ? "PUT" : "POST", e.id ? `/api/geofences/${e.id}` : "/api/geofences", body);
      this.selected = null;
      e.layer.pm.disable();
      this.form.hidden = true;
      this.say(`saved ${saved.properties.name}`);
      await this.reload();
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      this.refused(err);
    }
  }

  private refused(err: ApiError): void {
    const field = formField(err.field);
    if (field) {
      this.showErrors({ [field]: err.message });
      return;
    }
    this.say(err.message, true);
    const place = errorPlace(err.message);
    if (place) {
      // At the vertex the server names.
      this.errorMarker = L.marker([place.lat, place.lon], {
        icon: L.divIcon({ className: "fence-error", html: "!", iconSize: [18, 18] }),
      }).bindTooltip(err.message, { permanent: true, direction: "top", className: "fence-error-tip" })
        .addTo(this.map);
    }
  }

  private async remove(): Promise<void> {
    const e = this.selected;
    if (!e?.id || !confirm(`Delete the geofence "${e.properties?.name ?? ""}"?`)) return;
    try {
      await this.api.send("DELETE", `/api/geofences/${e.id}`);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      this.say(err.message, true);
      return;
    }
    this.selected = null;
    this.form.hidden = true;
    this.say(`deleted ${e.properties?.name ?? ""}`);
    await this.reload();
  }

  private showErrors(errors: FormErrors): void {
    for (const [field, message] of Object.entries(errors)) {
      const input = this.form.elements.namedItem(field);
      if (input instanceof HTMLInputElement) {
        input.setAttribute("aria-invalid", "true");
        input.after(el("span", { class: "field-error", role: "alert" }, message));
      }
    }
  }

  private clearErrors(): void {
    this.message.classList.remove("error");
    for (const n of this.form.querySelectorAll(".field-error")) n.remove();
    for (const n of this.form.querySelectorAll("[aria-invalid]")) n.removeAttribute("aria-invalid");
    this.errorMarker?.remove();
    this.errorMarker = null;
  }

  private say(text: string, error = false): void {
    this.message.textContent = text;
    this.message.classList.toggle("error", error);
  }
}

/** Geoman equips maps made after it loads; the console's map was made before (the editor is
 * loaded on first use), so it is equipped here as Geoman's own init hook would. */
function attachGeoman(map: L.Map): void {
  if ((map as Partial<L.Map>).pm) return;
  // Geoman hangs itself on window.L (Leaflet's exports), not on this module's namespace copy.
  const pm = (window as unknown as { L: { PM: { Map: new (m: L.Map) => L.PM.PMMap } } }).L.PM;
  map.pm = new pm.Map(map);
  map.pm.setGlobalOptions({});
}

/** The GeoJSON geometry the API takes for a layer: circles as their centre. */
function geometryOf(e: Editable): { type: string; coordinates: unknown } {
  if (e.layer instanceof L.Circle) {
    const c = e.layer.getLatLng();
    return { type: "Point", coordinates: [c.lng, c.lat] };
  }
  return e.layer.toGeoJSON().geometry;
}
