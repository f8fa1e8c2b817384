// The live WebSocket (/api/live): subscribe with the access token, hand snapshots and batches
// on, reconnect with a growing delay, and refresh the token when the server says it expired.

import type { Api } from "./api";
import { timings } from "./perf";
import type { LiveMessage } from "./types";

const FIRST_RETRY_MS = 1000;
const MAX_RETRY_MS = 15_000;
const CLOSE_UNAUTHENTICATED = 4401;
const CLOSE_FORBIDDEN = 4403;

export interface LiveHandlers {
  message(msg: LiveMessage): void;
  status(text: string, ok: boolean): void;
}

export class LiveConnection {
  private ws: WebSocket | null = null;
  private retryMs = FIRST_RETRY_MS;
  private needRefresh = false;
  private stopped = false;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(private readonly api: Api, private readonly handlers: LiveHandlers) {}

  start(): void {
    this.stopped = false;
    this.open();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.ws?.close();
    this.ws = null;
  }

  /** Extend the open subscription with a new token (same user), without reconnecting. */
  renew(token: string): void {
    if (this.ws?.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({ type: "subscribe", token }));
    }
  }

  private open(): void {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${proto}//${location.host}/api/live`);
    this.ws = ws;
    ws.onopen = () => {
      ws.send(JSON.stringify({ type: "subscribe", token: this.api.tokens?.access_token }));
    };
    ws.onmessage = (ev: MessageEvent<string>) => {
      const started = performance.now();
      const msg = JSON.parse(ev.data) as LiveMessage;
      timings.add(timings.parseMs, performance.now() - started);
      if (msg.type === "subscribed") {
        this.retryMs = FIRST_RETRY_MS;
        this.handlers.status("live", true);
      } else if (msg.type === "error") {
        this.handlers.status(msg.message, false);
        if (msg.code === "token_expired") this.needRefresh = true;
      }
      this.handlers.message(msg);
    };
    ws.onclose = (ev: CloseEvent) => {
      if (this.stopped || this.ws !== ws) return;
      if (ev.code === CLOSE_FORBIDDEN) {
        this.handlers.status("live map not available to this role", false);
        return;  // retrying cannot help
      }
      this.handlers.status("reconnecting…", false);
      const refresh = ev.code === CLOSE_UNAUTHENTICATED || this.needRefresh;
      this.needRefresh = false;
      this.retryTimer = setTimeout(() => {
        void (refresh ? this.api.refresh() : Promise.resolve(true)).then(() => {
          if (!this.stopped) this.open();
        });
      }, this.retryMs);
      this.retryMs = Math.min(this.retryMs * 2, MAX_RETRY_MS);
    };
  }
}
