// Builds the console with esbuild: one ES module bundle and one stylesheet (Leaflet's CSS and
// images included) in dist/, served by the API at /static/app/. With --tests, bundles each
// tests/*.test.ts for Node's test runner into .test-build/ instead.
import { build } from "esbuild";
import { copyFileSync, readdirSync, rmSync } from "node:fs";

const tests = process.argv.includes("--tests");

if (tests) {
  rmSync(".test-build", { recursive: true, force: true });
  await build({
    entryPoints: readdirSync("tests").filter((f) => f.endsWith(".test.ts")).map((f) => `tests/${f}`),
    outdir: ".test-build", bundle: true, platform: "node", format: "esm",
    outExtension: { ".js": ".mjs" }, target: "node20", logLevel: "warning",
  });
} else {
  rmSync("dist", { recursive: true, force: true });
  await build({
    entryPoints: { console: "src/main.ts" },
    // Splitting: what only some users need (the geofence editor) is a chunk loaded on use.
    outdir: "dist", bundle: true, format: "esm", splitting: true, target: "es2022", minify: true,
    chunkNames: "chunks/[name]-[hash]",
    sourcemap: "linked", logLevel: "warning",
    loader: { ".png": "file", ".svg": "file" }, assetNames: "assets/[name]-[hash]",
    legalComments: "linked",
  });
  // Leaflet's BSD-2-Clause licence asks for its text to travel with the binary form.
  copyFileSync("node_modules/leaflet/LICENSE", "dist/leaflet.LICENSE.txt");
}
