import type { Server } from "node:http";
import express from "express";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { errorHandler } from "../../../appservice/src/http/errors.ts";
import { meetingInfoRouter, type MeetingInfoDeps } from "../../../appservice/src/http/meetingInfo.ts";
import type { AliasRecord } from "../../../appservice/src/store/store.ts";

const records = new Map<string, AliasRecord>([
  ["#meet-team:a.example", { alias: "#meet-team:a.example", roomId: "!team:a.example", state: "ready", createdAt: 1 }],
  ["#meet-half:a.example", { alias: "#meet-half:a.example", roomId: null, state: "creating", createdAt: 1 }],
]);
const asked: string[] = [];
const deps: Omit<MeetingInfoDeps, "limit"> = {
  aliases: {
    getAlias: async (alias) => {
      asked.push(alias);
      return records.get(alias);
    },
  },
  meetings: { slugOf: (alias) => /^#meet-([a-z0-9._=-]{1,64}):a\.example$/.exec(alias)?.[1] },
};

let server: Server;
let base: string;
let refused = 0;

beforeAll(async () => {
  const app = express();
  app.use(meetingInfoRouter({ ...deps, limit: { perMinute: 60, burst: 1000 }, onRefused: () => refused++ }));
  const tight = express.Router();
  app.use("/tight", tight.use(meetingInfoRouter({ ...deps, limit: { perMinute: 1, burst: 2 } })));
  app.use(errorHandler());
  server = await new Promise<Server>((resolve) => {
    const s = app.listen(0, "127.0.0.1", () => resolve(s));
  });
  const address = server.address();
  if (!address || typeof address === "string") throw new Error("no port");
  base = `http://127.0.0.1:${address.port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
});

async function get(path: string): Promise<{ status: number; body: Record<string, unknown>; cors: string | null }> {
  const res = await fetch(`${base}${path}`);
  const text = await res.text();
  return { status: res.status, body: (text ? JSON.parse(text) : {}) as Record<string, unknown>, cors: res.headers.get("access-control-allow-origin") };
}

const info = (alias: string, prefix = "") => get(`${prefix}/_parley/v1/meetings/${encodeURIComponent(alias)}`);

describe("GET /_parley/v1/meetings/{alias}", () => {
  it("says whether a meeting alias of this Parley has its room, from the store alone", async () => {
    expect(await info("#meet-team:a.example")).toEqual({
      status: 200,
      body: { exists: true, alias: "#meet-team:a.example", server: "a.example" },
      cors: "*",
    });
    expect((await info("#meet-tema:a.example")).body).toEqual({ exists: false, alias: "#meet-tema:a.example", server: "a.example" });
    // A claim still being made is no meeting yet.
    expect((await info("#meet-half:a.example")).body).toMatchObject({ exists: false });
  });

  it("refuses what is no room alias with 400 M_INVALID_PARAM, without asking the store", async () => {
    asked.length = 0;
    for (const garbage of ["meet-team", "#meet-team", "!room:a.example", "#:a.example", "#meet-team:a example", "#meet-team:a.example:80:80", "@user:a.example", "#a\0b:a.example"]) {
      const r = await info(garbage);
      expect({ garbage, status: r.status, errcode: r.body.errcode }).toEqual({ garbage, status: 400, errcode: "M_INVALID_PARAM" });
    }
    const badEncoding = await get("/_parley/v1/meetings/%23meet-%E0%A4%A:a.example");
    expect([badEncoding.status, badEncoding.body.errcode]).toEqual([400, "M_INVALID_PARAM"]);
    expect(asked).toEqual([]);
  });

  it("refuses a huge alias with 400 (Matrix aliases have at most 255 bytes)", async () => {
    const long = await info(`#meet-${"a".repeat(250)}:a.example`);
    expect([long.status, long.body.errcode, long.body.error]).toEqual([400, "M_INVALID_PARAM", "a room alias has at most 255 bytes"]);
    const huge = await info(`#meet-${"é".repeat(1300)}:a.example`); // ~8 KB of URL
    expect([huge.status, huge.body.errcode]).toEqual([400, "M_INVALID_PARAM"]);
    // Past Node's header limit (16 KB) the request never reaches Parley's code.
    expect((await info(`#meet-${"é".repeat(4000)}:a.example`)).status).toBe(431);
  });

  it("answers 404 M_NOT_FOUND for aliases outside Parley's namespace", async () => {
    for (const alias of ["#meet-team:b.example", "#team:a.example", "#meet-TEAM:a.example"]) {
      const r = await info(alias);
      expect({ alias, status: r.status, errcode: r.body.errcode }).toEqual({ alias, status: 404, errcode: "M_NOT_FOUND" });
    }
  });

  it("asks for the alias when there is none", async () => {
    const r = await get("/_parley/v1/meetings/");
    expect([r.status, r.body.errcode]).toEqual([400, "M_MISSING_PARAM"]);
  });

  it("limits lookups per address with 429 M_LIMIT_EXCEEDED", async () => {
    expect((await info("#meet-team:a.example", "/tight")).status).toBe(200);
    expect((await info("#meet-x:a.example", "/tight")).status).toBe(200);
    const third = await info("#meet-team:a.example", "/tight");
    expect([third.status, third.body.errcode, third.cors]).toEqual([429, "M_LIMIT_EXCEEDED", "*"]);
    expect(refused).toBe(0); // the other router's count
  });
});
