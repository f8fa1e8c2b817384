// The REST client: tokens in sessionStorage (one tab, one session), refreshed a minute before
// they expire and once more on a 401; the API's error body turned into an ApiError.

import type { Page, Tokens } from "./types";

const STORAGE_KEY = "fleet.tokens";
/** The API's page limit for lists (docs/api.md). */
const PAGE_LIMIT = 100;
/** Pages of a long list fetched at once. */
const PARALLEL_PAGES = 4;

export class ApiError extends Error {
  constructor(message: string, readonly status: number, readonly code?: string,
              readonly field?: string, readonly details?: Record<string, unknown>) {
    super(message);
  }
}

interface ErrorBody {
  error?: { message?: string; code?: string; field?: string; details?: Record<string, unknown> };
}

export class Api {
  tokens: Tokens | null = null;
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;
  /** Called with new tokens (the live socket re-subscribes with them). */
  onTokens: (tokens: Tokens) => void = () => undefined;
  /** Called when the session cannot be renewed. */
  onSignedOut: () => void = () => undefined;

  restore(): boolean {
    const saved = sessionStorage.getItem(STORAGE_KEY);
    if (!saved) return false;
    try {
      this.setTokens(JSON.parse(saved) as Tokens);
      return true;
    } catch {
      sessionStorage.removeItem(STORAGE_KEY);
      return false;
    }
  }

  private setTokens(tokens: Tokens): void {
    this.tokens = tokens;
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify(tokens));
    clearTimeout(this.refreshTimer);
    const inMs = Math.max(10, tokens.expires_in - 60) * 1000;
    this.refreshTimer = setTimeout(() => void this.refresh(), inMs);
    this.onTokens(tokens);
  }

  async login(email: string, password: string): Promise<Tokens> {
    const tokens = await this.request<Tokens>("/api/auth/login", {
      method: "POST", body: JSON.stringify({ email, password }),
    }, false);
    this.setTokens(tokens);
    return tokens;
  }

  async refresh(): Promise<boolean> {
    if (!this.tokens) return false;
    try {
      const tokens = await this.request<Tokens>("/api/auth/refresh", {
        method: "POST", body: JSON.stringify({ refresh_token: this.tokens.refresh_token }),
      }, false);
      this.setTokens(tokens);
      return true;
    } catch {
      return false;
    }
  }

  async logout(): Promise<void> {
    clearTimeout(this.refreshTimer);
    if (this.tokens) {
      await this.request("/api/auth/logout", { method: "POST" }, false).catch(() => undefined);
    }
    this.tokens = null;
    sessionStorage.removeItem(STORAGE_KEY);
  }

  get<T>(path: string): Promise<T> {
    return this.request<T>(path, {});
  }

  /** A write: the body is sent as JSON. */
  send<T = unknown>(method: "POST" | "PUT" | "PATCH" | "DELETE", path: string, body?: unknown): Promise<T> {
    return this.request<T>(path, { method, body: body === undefined ? null : JSON.stringify(body) });
  }

  /** Every item of a paged list, fetched a few pages at a time. */
  async all<T>(path: string): Promise<T[]> {
    const sep = path.includes("?") ? "&" : "?";
    const first = await this.get<Page<T>>(`${path}${sep}limit=${PAGE_LIMIT}&page=1`);
    const items = [...first.items];
    const pages = Math.ceil(first.total / PAGE_LIMIT);
    for (let start = 2; start <= pages; start += PARALLEL_PAGES) {
      const batch = [];
      for (let p = start; p < start + PARALLEL_PAGES && p <= pages; p += 1) {
        batch.push(this.get<Page<T>>(`${path}${sep}limit=${PAGE_LIMIT}&page=${p}`));
      }
      for (const page of await Promise.all(batch)) items.push(...page.items);
    }
    return items;
  }

  private async request<T>(path: string, init: RequestInit, retry = true): Promise<T> {
    const headers = new Headers(init.headers);
    if (init.body != null) headers.set("Content-Type", "application/json");
    if (this.tokens) headers.set("Authorization", `Bearer ${this.tokens.access_token}`);
    const res = await fetch(path, { ...init, headers });
    if (res.status === 401 && retry && this.tokens) {
      if (await this.refresh()) return this.request<T>(path, init, false);
      this.onSignedOut();
    }
    const body: unknown = res.status === 204 ? null : await res.json().catch(() => null);
    if (!res.ok) {
      const error = (body as ErrorBody | null)?.error;
      throw new ApiError(error?.message ?? res.statusText, res.status, error?.code, error?.field,
                         error?.details);
    }
    return body as T;
  }
}
