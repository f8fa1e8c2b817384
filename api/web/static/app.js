// Dispatcher live map: login, live markers over the /api/live WebSocket, geofences,
// an event feed with click-to-focus and a vehicle panel with its recent track.
"use strict";
(function () {
  const STALE_MS = 5 * 60 * 1000;
  const MAX_EVENTS = 200;
  const state = { tokens: null, map: null, markers: {}, positions: {}, fences: {}, ws: null,
                  selected: null, track: null, retryMs: 1000, refreshTimer: null };
  window.fleet = state;  // inspected by the browser test

  const $ = (id) => document.getElementById(id);

  function saveTokens(tokens) {
    state.tokens = tokens;
    sessionStorage.setItem("fleet.tokens", JSON.stringify(tokens));
    clearTimeout(state.refreshTimer);
    // Refresh a minute before the access token expires.
    const inMs = Math.max(10, tokens.expires_in - 60) * 1000;
    state.refreshTimer = setTimeout(refresh, inMs);
    // An open live connection is extended with the new token (same user) without reconnecting.
    if (state.ws && state.ws.readyState === WebSocket.OPEN) {
      state.ws.send(JSON.stringify({ type: "subscribe", token: tokens.access_token }));
    }
  }

  async function api(path, options = {}) {
    const headers = Object.assign({ "Content-Type": "application/json" }, options.headers || {});
    if (state.tokens) headers.Authorization = "Bearer " + state.tokens.access_token;
    const res = await fetch(path, Object.assign({}, options, { headers }));
    if (res.status === 401 && state.tokens && !options.retried) {
      if (await refresh()) return api(path, Object.assign({}, options, { retried: true }));
      logout();
    }
    const body = res.status === 204 ? null : await res.json();
    if (!res.ok) throw new Error((body && body.error && body.error.message) || res.statusText);
    return body;
  }

  async function refresh() {
    if (!state.tokens) return false;
    try {
      const res = await fetch("/api/auth/refresh", { method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ refresh_token: state.tokens.refresh_token }) });
      if (!res.ok) return false;
      saveTokens(await res.json());
      return true;
    } catch (e) { return false; }
  }

  async function login(ev) {
    ev.preventDefault();
    $("login-error").textContent = "";
    try {
      const res = await fetch("/api/auth/login", { method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ email: $("email").value, password: $("password").value }) });
      const body = await res.json();
      if (!res.ok) throw new Error(body.error ? body.error.message : res.statusText);
      saveTokens(body);
      start();
    } catch (e) { $("login-error").textContent = e.message; }
  }

  function logout() {
    if (state.tokens) {
      fetch("/api/auth/logout", { method: "POST",
        headers: { Authorization: "Bearer " + state.tokens.access_token } }).catch(() => {});
    }
    sessionStorage.removeItem("fleet.tokens");
    location.reload();
  }

  async function start() {
    $("login").hidden = true;
    $("app").hidden = false;
    $("who").textContent = state.tokens.user.email + " (" + state.tokens.user.role + ")";
    const cfg = await (await fetch("/api/map-config")).json();
    const map = L.map("map", { zoomControl: true, preferCanvas: false }).setView([52.52, 13.405], 12);
    state.map = map;
    if (cfg.tiles_url) {
      L.tileLayer(cfg.tiles_url, { maxZoom: 19, attribution: cfg.tiles_attribution }).addTo(map);
    } else {
      // No-tiles mode (offline): a neutral grid, geofences and vehicles only.
      $("map").classList.add("no-tiles");
      map.attributionControl.addAttribution('<span class="no-tiles-note">no base map (offline mode)</span>');
    }
    await loadGeofences();
    connect();
  }

  async function loadGeofences() {
    let fc;
    try { fc = await api("/api/geofences?active=true"); } catch (e) { return; }
    const bounds = [];
    for (const f of fc.features) {
      const p = f.properties;
      state.fences[f.id] = p.name;
      const style = { color: p.speed_limit_kph ? "#d93025" : "#2456a6", weight: 2, fillOpacity: 0.08 };
      let layer;
      if (p.kind === "circle") {
        const [lon, lat] = f.geometry.coordinates;
        layer = L.circle([lat, lon], Object.assign({ radius: p.radius_m }, style));
      } else if (p.kind === "corridor") {
        const latlngs = f.geometry.coordinates.map(([lon, lat]) => [lat, lon]);
        L.polyline(latlngs, { color: style.color, weight: 1, dashArray: "4 4" }).addTo(state.map);
        layer = L.polyline(latlngs, { color: style.color, opacity: 0.25, weight: 12 });
      } else {
        layer = L.geoJSON(f, { style });
      }
      layer.bindTooltip(p.name + (p.speed_limit_kph ? " · " + p.speed_limit_kph + " km/h" : ""));
      layer.addTo(state.map);
      bounds.push(layer.getBounds());
    }
    if (bounds.length) {
      const all = bounds.reduce((a, b) => a.extend(b), L.latLngBounds(bounds[0].getSouthWest(), bounds[0].getNorthEast()));
      state.map.fitBounds(all.pad(0.3));
    }
  }

  function statusOf(p) {
    if (Date.now() - p.t_ms > STALE_MS) return "stale";
    if (p.moving) return "moving";
    if (p.ignition) return "idle";
    return "off";
  }

  const ARROW = '<svg viewBox="0 0 24 24"><path d="M12 2 L20 21 L12 16 L4 21 Z"/></svg>';

  function iconFor(p) {
    const status = statusOf(p);
    const heading = p.heading_deg || 0;
    return L.divIcon({ className: "", iconSize: [26, 26], iconAnchor: [13, 13],
      html: '<div class="vehicle-icon ' + status + '" data-vehicle-id="' + p.vehicle_id +
            '" data-status="' + status + '"><div style="transform: rotate(' + heading +
            'deg)">' + ARROW + '</div><span class="label">' + escapeHtml(p.code) + "</span></div>" });
  }

  function escapeHtml(s) {
    return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }

  function applyPosition(p) {
    const prev = state.positions[p.vehicle_id];
    if (prev && prev.t_ms > p.t_ms) return;  // out of order: keep the newer one
    const merged = Object.assign({}, prev || {}, p);
    state.positions[p.vehicle_id] = merged;
    if (merged.lat == null || merged.lon == null) return;
    let m = state.markers[p.vehicle_id];
    if (!m) {
      m = L.marker([merged.lat, merged.lon], { icon: iconFor(merged), title: merged.code });
      m.on("click", () => select(p.vehicle_id));
      m.addTo(state.map);
      state.markers[p.vehicle_id] = m;
      $("vehicle-count").textContent = Object.keys(state.markers).length + " vehicles";
    } else {
      m.setLatLng([merged.lat, merged.lon]);
      m.setIcon(iconFor(merged));
    }
    if (state.selected === p.vehicle_id) { showSignals(merged); extendTrack(merged); }
  }

  function addEvent(e) {
    const li = document.createElement("li");
    li.className = e.kind + " " + (e.severity || "info");
    li.dataset.vehicleId = e.vehicle_id;
    const t = new Date(e.t_ms).toLocaleTimeString();
    const what = e.kind === "geofence" ? e.event_type + " " + (e.geofence_name || state.fences[e.geofence_id] || "geofence")
               : e.kind === "anomaly" ? "anomaly " + e.event_type + (e.value != null ? " = " + e.value : "")
               : e.event_type.replace(/_/g, " ") + (e.value != null ? " (" + e.value + ")" : "");
    li.innerHTML = "<time>" + t + "</time><b>" + escapeHtml(e.code) + "</b> " + escapeHtml(what);
    li.addEventListener("click", () => {
      const pos = e.lat != null ? [e.lat, e.lon] : (state.markers[e.vehicle_id] || {}).getLatLng && state.markers[e.vehicle_id].getLatLng();
      if (pos) state.map.setView(pos, Math.max(state.map.getZoom(), 15));
      select(e.vehicle_id);
    });
    const list = $("events");
    list.insertBefore(li, list.firstChild);
    while (list.children.length > MAX_EVENTS) list.removeChild(list.lastChild);
    const icon = document.querySelector('.vehicle-icon[data-vehicle-id="' + e.vehicle_id + '"]');
    if (icon) { icon.classList.add("flash"); }
  }

  async function select(vehicleId) {
    state.selected = vehicleId;
    const p = state.positions[vehicleId];
    $("panel").hidden = false;
    $("panel-title").textContent = p ? p.code : vehicleId;
    if (p) showSignals(p);
    if (state.track) { state.track.remove(); state.track = null; }
    try {
      const from = new Date(Date.now() - 30 * 60 * 1000).toISOString();
      const f = await api("/api/vehicles/" + vehicleId + "/track?from=" + encodeURIComponent(from));
      if (state.selected !== vehicleId) return;
      state.track = L.polyline(f.geometry.coordinates.map(([lon, lat]) => [lat, lon]),
                               { color: "#2456a6", weight: 3, opacity: 0.7 }).addTo(state.map);
    } catch (e) { /* a driver or viewer may not see history: the panel still shows signals */ }
  }

  function extendTrack(p) {
    if (state.track) state.track.addLatLng([p.lat, p.lon]);
  }

  function fmt(v, unit, digits = 0) { return v == null ? "–" : Number(v).toFixed(digits) + (unit ? " " + unit : ""); }

  function showSignals(p) {
    const rows = [["Status", statusOf(p)], ["Speed", fmt(p.speed_kph, "km/h")],
      ["Heading", fmt(p.heading_deg, "°")], ["Ignition", p.ignition == null ? "–" : (p.ignition ? "on" : "off")],
      ["Fuel", fmt(p.fuel_pct, "%")], ["Coolant", fmt(p.coolant_c, "°C")],
      ["Battery", fmt(p.battery_v, "V", 1)], ["Updated", new Date(p.t_ms).toLocaleTimeString()]];
    $("panel-signals").innerHTML = rows.map(([k, v]) => "<dt>" + k + "</dt><dd>" + escapeHtml(v) + "</dd>").join("");
  }

  function setStatus(text, ok) {
    const s = $("status");
    s.textContent = text;
    s.className = "status " + (ok ? "ok" : "bad");
  }

  function connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(proto + "//" + location.host + "/api/live");
    state.ws = ws;
    ws.onopen = () => ws.send(JSON.stringify({ type: "subscribe", token: state.tokens.access_token }));
    ws.onmessage = (msg) => {
      const data = JSON.parse(msg.data);
      if (data.type === "subscribed") { setStatus("live", true); state.retryMs = 1000; }
      else if (data.type === "snapshot" || data.type === "batch") {
        (data.positions || []).forEach(applyPosition);
        (data.events || []).forEach(addEvent);
      } else if (data.type === "error") {
        setStatus(data.message, false);
        if (data.code === "token_expired") state.needRefresh = true;
      }
    };
    ws.onclose = async (ev) => {
      setStatus("reconnecting…", false);
      if (ev.code === 4401 || state.needRefresh) { state.needRefresh = false; await refresh(); }
      setTimeout(connect, state.retryMs);
      state.retryMs = Math.min(state.retryMs * 2, 15000);
    };
  }

  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("panel-close").addEventListener("click", () => {
    $("panel").hidden = true; state.selected = null;
    if (state.track) { state.track.remove(); state.track = null; }
  });
  const saved = sessionStorage.getItem("fleet.tokens");
  if (saved) { saveTokens(JSON.parse(saved)); refresh().then((ok) => ok ? start() : sessionStorage.removeItem("fleet.tokens")); }
})();
