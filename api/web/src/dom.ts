// Small DOM helpers: find an element that must exist, build elements without innerHTML (so
// that vehicle codes and fence names are never parsed as markup), and format values.

export function byId<T extends HTMLElement = HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`the page has no #${id}`);
  return el as T;
}

type Attrs = Record<string, string | number | boolean | null | undefined>;

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K, attrs: Attrs = {}, ...children: (Node | string | null)[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === "class") node.className = String(v);
    else if (k.startsWith("data-")) node.setAttribute(k, String(v));
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

export function fmt(v: number | null | undefined, unit = "", digits = 0): string {
  return v == null ? "–" : `${v.toFixed(digits)}${unit ? ` ${unit}` : ""}`;
}

export function ago(tMs: number, now: number): string {
  const s = Math.max(0, Math.round((now - tMs) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86_400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86_400)} d ago`;
}

export function clock(tMs: number): string {
  return new Date(tMs).toLocaleTimeString();
}
