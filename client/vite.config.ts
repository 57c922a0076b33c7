// Builds the web client into client/dist: two pages (the app, and the widget that runs inside
// Element's iframe), no CDN, no inline scripts (the appservice serves it with a strict CSP).
// `PARLEY_URL=http://127.0.0.11:PORT npx vite client` proxies the call API and client config to a
// running Parley so the dev server behaves like the served build.
import { defineConfig } from "vite";

const root = new URL(".", import.meta.url).pathname;
const env = (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env ?? {};
const parley = env.PARLEY_URL;
const proxy = parley ? { "/_parley": { target: parley, ws: true, changeOrigin: true } } : undefined;

export default defineConfig({
  root,
  base: "./",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    // Source maps on request (PARLEY_SOURCEMAP=1): they would ship matrix-js-sdk's sources too.
    sourcemap: !!env.PARLEY_SOURCEMAP,
    // The polyfill is an inline snippet in the entry; every browser we support has modulepreload.
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
    // matrix-js-sdk is most of the app chunk (~790 kB, ~235 kB gzipped).
    chunkSizeWarningLimit: 1024,
    rollupOptions: {
      input: { index: `${root}index.html`, widget: `${root}widget.html` },
    },
  },
  server: { host: "127.0.0.1", strictPort: false, proxy },
  preview: { host: "127.0.0.1", proxy },
});
