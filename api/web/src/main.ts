// The dispatcher console: sign in, then the vehicle list, the live map, the vehicle panel and
// the event feed, kept in step. Live updates are applied at most once per animation frame;
// what the dispatcher looks at lives in the URL (view.ts).

import "leaflet/dist/leaflet.css";
// The editor's styles live in the main stylesheet: esbuild does not load a lazy chunk's CSS.
import "@geoman-io/leaflet-geoman-free/dist/leaflet-geoman.css";
import "./console.css";

import { Api, ApiError } from "./api";
import { byId } from "./dom";
import { ackOf, eventKey, Inbox } from "./events";
import { EventFeed } from "./feed";
import { Fleet, isAlerting, motionStatus, type Query } from "./fleet";
import { VehicleList } from "./list";
import { LiveConnection } from "./live";
import type { FenceEditor } from "./fences";
import { fetchEvents } from "./history";
import { FleetMap } from "./map";
import { VehiclePanel } from "./panel";
import { timings } from "./perf";
import { Overview } from "./overview";
import { Replay } from "./replay";
import type { Ack, Driver, FenceFeature, FleetEvent, LiveMessage, MapConfig, Vehicle } from "./types";
import { formatView, parseView, timeRange, type Range, type ViewState } from "./view";

/** The feed starts with this much history, then goes live. */
const INBOX_HISTORY_MS = 6 * 3_600_000;
/** The list follows live updates at most this often (the map at every frame): sorting
 * 10,000 rows four times a second would cost more than everything else together. */
const LIST_REFRESH_MS = 1000;
/** Statuses age (moving -> offline) without any message: redraw everything this often. */
const AGE_REDRAW_MS = 15_000;

const api = new Api();

class Console {
  readonly fleet = new Fleet();
  readonly inbox = new Inbox();
  readonly map: FleetMap;
  readonly list: VehicleList;
  readonly panel: VehiclePanel;
  readonly feed: EventFeed;
  readonly live: LiveConnection;
  readonly replay: Replay;
  readonly overview: Overview;
  /** Loaded on first use: Geoman and its geometry libraries are most of the bundle, and only
   * fleet managers and admins edit fences. */
  fences: FenceEditor | null = null;
  view: ViewState;
  /** Self-measurements (perf.ts), read by `fleet bench map`. */
  readonly timings = timings;
  private readonly dirty = new Set<string>();
  /** Fence names by id: live geofence events carry only the id. */
  private readonly fenceNames = new Map<string, string>();
  private everything = true;
  private frame = 0;
  private listShownAt = 0;
  /** Fitting the map to the fleet: once, in the frame after the first snapshot. */
  private fit: "waiting" | "due" | "done" = "waiting";
  private listTimer: ReturnType<typeof setTimeout> | undefined;
  private trackFor: string | null = null;

  constructor(config: MapConfig) {
    this.view = parseView(location.hash);
    this.map = new FleetMap(byId("map"), config, (id) => this.select(id));
    this.list = new VehicleList({ query: (q) => this.setQuery(q), select: (id) => this.select(id) },
                                this.view);
    this.panel = new VehiclePanel({ close: () => this.select(null), replay: () => this.openReplay() });
    this.replay = new Replay(api, this.map.map, {
      range: (range) => this.setRange(range),
      close: () => this.closeReplay(),
    });
    this.feed = new EventFeed(this.inbox, {
      pick: (e) => this.pick(e),
      acknowledge: canAcknowledge() ? (e, comment) => this.acknowledge(e, comment) : undefined,
    });
    this.live = new LiveConnection(api, {
      message: (msg) => this.onMessage(msg),
      status: (text, ok) => {
        const s = byId("status");
        s.textContent = text;
        s.className = `status ${ok ? "ok" : "bad"}`;
      },
    });
    this.overview = new Overview(api, () => this.inbox.list(), (id) => {
      this.showPage("map");
      this.select(id);
    });
    byId("tab-map").addEventListener("click", () => this.showPage("map"));
    byId("tab-overview").addEventListener("click", () => this.showPage("overview"));
    byId("tab-overview").hidden = !canSeeOverview();
    const editButton = byId("edit-fences");
    editButton.hidden = !canEditFences();
    editButton.addEventListener("click", () => void this.toggleFenceEditor());
    api.onTokens = (tokens) => this.live.renew(tokens.access_token);
    window.addEventListener("hashchange", () => this.onHash());
    setInterval(() => this.redrawAll(), AGE_REDRAW_MS);
  }

  async load(): Promise<void> {
    const [vehicles, drivers] = await Promise.all([
      api.all<Vehicle>("/api/vehicles"),
      api.all<Driver>("/api/drivers").catch(optional<Driver[]>([])),
      this.loadFences(true),
    ]);
    this.fleet.setVehicles(vehicles, drivers);
    this.redrawAll();
    this.live.start();
    // Past events after the list: the feed fills while the map is already live.
    const now = Date.now();
    this.addEvents(await fetchEvents(api, now - INBOX_HISTORY_MS, now + 60_000));
    if (this.view.vehicle) this.select(this.view.vehicle);
    if (this.view.page === "overview") this.showPage("overview");
  }

  /** The live map or the fleet overview (in the URL, like the rest of the view). */
  showPage(page: ViewState["page"]): void {
    if (page === "overview" && !canSeeOverview()) page = "map";
    this.view = { ...this.view, page };
    this.saveView();
    byId("tab-map").setAttribute("aria-pressed", String(page === "map"));
    byId("tab-overview").setAttribute("aria-pressed", String(page === "overview"));
    byId("live").hidden = page !== "map";
    if (page === "overview") {
      void this.overview.show();
    } else {
      this.overview.hide();
      this.map.map.invalidateSize();
    }
  }

  private async toggleFenceEditor(): Promise<void> {
    if (!this.fences) {
      const { FenceEditor } = await import("./fences");
      this.fences = new FenceEditor(api, this.map.map, () => this.loadFences(false));
    }
    if (this.fences.open) await this.fences.close();
    else await this.fences.show();
  }

  /** The active fences on the map (again after the editor closes). */
  async loadFences(fit: boolean): Promise<void> {
    const fences = await api.get<{ features: FenceFeature[] }>("/api/geofences?active=true")
      .catch(optional({ features: [] as FenceFeature[] }));
    for (const f of fences.features) this.fenceNames.set(String(f.id), f.properties.name);
    this.map.showFences(fences.features, fit);
  }

  private onMessage(msg: LiveMessage): void {
    if (msg.type !== "snapshot" && msg.type !== "batch") return;
    const started = performance.now();
    for (const p of msg.positions ?? []) {
      if (this.fleet.applyPosition(p)) this.dirty.add(p.vehicle_id);
    }
    if (msg.type === "snapshot" && this.fit === "waiting") {
      this.fit = this.view.vehicle ? "done" : "due";  // a linked vehicle keeps its view
    }
    if (msg.type === "batch" && msg.events?.length) this.addEvents(msg.events);
    if (msg.type === "batch" && msg.acks?.length) {
      for (const a of msg.acks) this.applyAck(eventKey(a), a.vehicle_id, ackOf(a));
    }
    this.schedule();
    timings.add(timings.applyMs, performance.now() - started);
  }

  private addEvents(received: FleetEvent[]): void {
    const events = received.map((e) => (e.kind === "geofence" && !e.geofence_name && e.geofence_id
      ? { ...e, geofence_name: this.fenceNames.get(e.geofence_id) ?? null } : e));
    for (const e of events) {
      this.fleet.noteEvent(e);
      this.dirty.add(e.vehicle_id);
    }
    if (this.inbox.add(events)) this.feed.draw();
    this.schedule();
  }

  private applyAck(key: string, vehicleId: string, ack: Ack): void {
    this.fleet.noteAck(vehicleId, key, ack);
    this.inbox.acknowledge(key, ack);
    this.feed.draw();
    this.dirty.add(vehicleId);
    this.schedule();
  }

  /** POST the acknowledgement; every dispatcher (this one too) also gets it live. */
  private async acknowledge(e: FleetEvent, comment: string): Promise<string | null> {
    try {
      const saved = await api.send<{ acked_by_email: string; acked_at: string; comment: string | null }>(
        "POST", "/api/event-acks", {
          kind: e.kind, vehicle_id: e.vehicle_id, time: new Date(e.t_ms).toISOString(),
          event_type: e.event_type, geofence_id: e.kind === "geofence" ? e.geofence_id ?? null : null,
          comment: comment.trim() || null,
        });
      this.applyAck(eventKey(e), e.vehicle_id, { by: saved.acked_by_email,
                                                 at_ms: Date.parse(saved.acked_at), comment: saved.comment });
      return null;
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      const existing = err.status === 409 ? err.details?.ack as
        { acked_by_email: string; acked_at: string; comment: string | null } | undefined : undefined;
      if (existing) {
        // Someone was quicker: show theirs.
        this.applyAck(eventKey(e), e.vehicle_id, { by: existing.acked_by_email,
                                                   at_ms: Date.parse(existing.acked_at), comment: existing.comment });
        return null;
      }
      return err.message;
    }
  }

  private schedule(): void {
    if (!this.frame) this.frame = requestAnimationFrame(() => this.render());
  }

  private redrawAll(): void {
    this.everything = true;
    this.schedule();
  }

  private render(): void {
    const started = performance.now();
    this.frame = 0;
    const now = Date.now();
    const everything = this.everything;
    const ids = everything ? [...this.fleet.rows.keys()] : [...this.dirty];
    this.everything = false;
    this.dirty.clear();
    const selected = this.selectedId;
    let selectedChanged = false;
    for (const id of ids) {
      if (id === selected) selectedChanged = true;
      const row = this.fleet.rows.get(id);
      const p = row?.position;
      if (!row || p?.lat == null || p.lon == null) continue;
      this.map.place(id, row.code, p.lat, p.lon, motionStatus(p, now), isAlerting(row, now));
      if (id === selected && this.trackFor === id) this.map.extendTrack(p.lat, p.lon);
    }
    if (this.fit === "due") {
      this.fit = "done";
      this.map.fitFleet();
    }
    this.showList(everything, now, selected);
    if (selected && selectedChanged) this.showPanel(selected, now);
    if (timings.firstVehicleAt == null && this.map.markerCount > 0) timings.firstVehicleAt = performance.now();
    timings.add(timings.renderMs, performance.now() - started);
  }

  /** The list now when the dispatcher changed something, else at most every LIST_REFRESH_MS
   * (a timer makes sure the last update is shown). */
  private showList(now_: boolean, now: number, selected: string | null): void {
    const wait = LIST_REFRESH_MS - (now - this.listShownAt);
    if (now_ || wait <= 0) {
      clearTimeout(this.listTimer);
      this.listTimer = undefined;
      this.listShownAt = now;
      this.list.show(this.fleet.query(this.view, now), this.fleet.counts(now), now, selected);
    } else if (this.listTimer === undefined) {
      this.listTimer = setTimeout(() => {
        this.listTimer = undefined;
        this.listShownAt = 0;
        this.schedule();
      }, wait);
    }
  }

  get selectedId(): string | null {
    return this.view.vehicle ? this.fleet.get(this.view.vehicle)?.id ?? null : null;
  }

  private setQuery(q: Query): void {
    this.view = { ...this.view, q: q.q, statuses: [...q.statuses], sort: q.sort };
    this.saveView();
    this.redrawAll();
  }

  select(idOrCode: string | null): void {
    const row = idOrCode ? this.fleet.get(idOrCode) : undefined;
    this.view = { ...this.view, vehicle: row?.code ?? null };
    this.saveView();
    this.map.select(row?.id ?? null);
    this.feed.setSelected(row?.id ?? null);
    if (!row) {
      this.panel.hide();
      this.map.clearTrack();
      this.trackFor = null;
      if (this.replay.open) this.closeReplay();
      this.redrawAll();
      return;
    }
    this.list.reveal(row.id);
    this.showPanel(row.id, Date.now());
    if (this.view.replay) this.openReplay();
    else void this.loadTrack(row.id);
    this.redrawAll();
  }

  /** Replay the selected vehicle over the view's range. */
  openReplay(): void {
    const row = this.view.vehicle ? this.fleet.get(this.view.vehicle) : undefined;
    if (!row) return;
    this.view = { ...this.view, replay: true };
    this.saveView();
    this.map.clearTrack();
    this.trackFor = null;
    const [from, to] = timeRange(this.view, Date.now());
    const custom = this.view.from != null;
    void this.replay.show({ vehicleId: row.id, code: row.code, from, to },
                          custom ? "custom" : this.view.range);
  }

  private closeReplay(): void {
    this.view = { ...this.view, replay: false };
    this.saveView();
    this.replay.close();
    const id = this.selectedId;
    if (id) void this.loadTrack(id);
  }

  private setRange(range: Range | { from: number; to: number }): void {
    this.view = typeof range === "string"
      ? { ...this.view, range, from: null, to: null }
      : { ...this.view, from: range.from, to: range.to };
    this.saveView();
    if (this.view.replay) this.openReplay();
    else if (this.selectedId) void this.loadTrack(this.selectedId);
  }

  private showPanel(id: string, now: number): void {
    const row = this.fleet.rows.get(id);
    if (!row) return;
    const events = this.inbox.list({ kinds: new Set(["geofence", "vehicle", "anomaly"]),
                                     minSeverity: "info", vehicleId: id });
    this.panel.show(row, events, now);
  }

  private async loadTrack(id: string): Promise<void> {
    this.map.clearTrack();
    this.trackFor = null;
    const [from, to] = timeRange(this.view, Date.now());
    const range = `from=${encodeURIComponent(new Date(from).toISOString())}` +
      `&to=${encodeURIComponent(new Date(to).toISOString())}`;
    try {
      const track = await api.get<{ geometry: { coordinates: [number, number][] } }>(
        `/api/vehicles/${id}/track?${range}`);
      if (this.selectedId !== id || this.replay.open) return;
      this.map.showTrack(track.geometry.coordinates);
      this.trackFor = id;
    } catch (err) {
      // A role without history (or no data yet): the panel still shows the live signals.
      if (!(err instanceof ApiError)) throw err;
    }
  }

  private pick(e: FleetEvent): void {
    if (e.lat != null && e.lon != null) this.map.focus(e.lat, e.lon);
    this.select(e.vehicle_id);
  }

  private saveView(): void {
    const hash = formatView(this.view);
    if (hash !== location.hash && !(hash === "" && location.hash === "")) {
      history.replaceState(null, "", hash || location.pathname + location.search);
    }
  }

  private onHash(): void {
    const next = parseView(location.hash);
    const before = this.view;
    this.view = next;
    if (next.page !== before.page) this.showPage(next.page);
    if (next.vehicle !== before.vehicle) {
      this.select(next.vehicle);
    } else if (next.replay !== before.replay || next.range !== before.range ||
               next.from !== before.from || next.to !== before.to) {
      if (next.replay) this.openReplay();
      else if (this.replay.open) this.closeReplay();
      else if (this.selectedId) void this.loadTrack(this.selectedId);
    }
    this.redrawAll();
  }
}

/** The dashboard's roles (docs/api.md): everyone but drivers. */
function canSeeOverview(): boolean {
  return api.tokens?.user.role !== "driver";
}

function canAcknowledge(): boolean {
  const role = api.tokens?.user.role;
  return role === "admin" || role === "fleet_manager";
}

function canEditFences(): boolean {
  const role = api.tokens?.user.role;
  return role === "admin" || role === "fleet_manager";
}

function optional<T>(fallback: T): (err: unknown) => T {
  return (err) => {
    if (err instanceof ApiError && (err.status === 403 || err.status === 404)) return fallback;
    throw err;
  };
}

declare global {
  interface Window {
    /** The running console, for browser tests and `fleet bench map`. */
    fleet?: Console;
  }
}

async function start(): Promise<void> {
  byId("login").hidden = true;
  byId("app").hidden = false;
  const user = api.tokens?.user;
  byId("who").textContent = user ? `${user.email} (${user.role})` : "";
  const config = await (await fetch("/api/map-config")).json() as MapConfig;
  const app = new Console(config);
  window.fleet = app;
  await app.load();
}

function signOut(): void {
  void api.logout().then(() => location.reload());
}

async function onLogin(ev: SubmitEvent): Promise<void> {
  ev.preventDefault();
  const error = byId("login-error");
  error.textContent = "";
  try {
    await api.login(byId<HTMLInputElement>("email").value, byId<HTMLInputElement>("password").value);
    await start();
  } catch (err) {
    error.textContent = err instanceof Error ? err.message : String(err);
  }
}

byId<HTMLFormElement>("login-form").addEventListener("submit", (ev) => void onLogin(ev));
byId("logout").addEventListener("click", signOut);
api.onSignedOut = signOut;
if (api.restore()) {
  void api.refresh().then((ok) => (ok ? start() : api.logout()));
}
