// What the console measures about itself, read by `fleet bench map` and the browser tests:
// how long decoding a live frame, applying it to the model and drawing the next frame take.

/** Samples kept per series (the newest). */
const KEEP = 5000;

export class Timings {
  /** JSON.parse of each live frame, ms: the floor every other figure is compared with. */
  readonly parseMs: number[] = [];
  /** Applying one live frame to the fleet model, ms. */
  readonly applyMs: number[] = [];
  /** Updating the page for one animation frame (markers moved, list, panel), ms. */
  readonly renderMs: number[] = [];
  /** Leaflet painting the vehicles' canvas for a frame (its own animation-frame callback), ms. */
  readonly drawMs: number[] = [];
  /** performance.now() when the first vehicle was placed on the map. */
  firstVehicleAt: number | null = null;

  add(series: number[], ms: number): void {
    series.push(ms);
    if (series.length > KEEP) series.splice(0, series.length - KEEP);
  }

  clear(): void {
    for (const s of [this.parseMs, this.applyMs, this.renderMs, this.drawMs]) s.length = 0;
  }
}

export const timings = new Timings();
