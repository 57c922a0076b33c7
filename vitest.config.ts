import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "unit",
          include: ["test/unit/**/*.test.ts"],
          environment: "node",
        },
      },
      {
        test: {
          name: "integration",
          include: ["test/integration/**/*.test.ts"],
          environment: "node",
          // Real Synapse/Janus processes: one file at a time on a 2-core machine.
          fileParallelism: false,
          testTimeout: 120_000,
          hookTimeout: 180_000,
        },
      },
      {
        test: {
          name: "e2e",
          include: ["test/e2e/**/*.test.ts"],
          environment: "node",
          // Chromium's fake camera at 10 frames a second (its default is 20): the same 720p
          // simulcast, half the encoding and decoding, on a 2-core machine running several pages
          // at once. The benchmarks (test/bench) keep the default.
          env: { PARLEY_FAKE_CAMERA_FPS: process.env.PARLEY_FAKE_CAMERA_FPS ?? "10" },
          fileParallelism: false,
          testTimeout: 120_000,
          hookTimeout: 240_000,
        },
      },
    ],
  },
});
