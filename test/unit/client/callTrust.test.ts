// Where a user's OpenID token may go (client/src/matrix/callTrust.ts): the serving origin, a call
// API a Parley bot of an allowed server announced over https, or a host the user said yes to.
import { describe, expect, it, vi } from "vitest";
import { ParleyClientError } from "../../../client/src/errors.ts";
import { CallTrust, decideCallHost, guardedOpenId, HostConsents, isParleyBot, type CallTrustSettings } from "../../../client/src/matrix/callTrust.ts";
import { PrejoinModel, type PrejoinMediaPort } from "../../../client/src/state/prejoinModel.ts";
import "./fakes.ts";

const ORIGIN = "https://meet.a.example";
const SETTINGS: CallTrustSettings = { servers: ["a.example", "b.example", "*.gov.example", "c.example:8448"], botLocalparts: ["parley", "meet-bot"], insecureLoopback: false };

function decide(api: string, sender: string, over: { settings?: Partial<CallTrustSettings>; confirmed?: string[] } = {}) {
  return decideCallHost({ api, sender }, { origin: ORIGIN, settings: { ...SETTINGS, ...over.settings }, confirmed: (o) => (over.confirmed ?? []).includes(o) });
}

function memory() {
  const mem = new Map<string, string>();
  return { getItem: (k: string) => mem.get(k) ?? null, setItem: (k: string, v: string) => void mem.set(k, v), removeItem: (k: string) => void mem.delete(k) };
}

describe("the call host trust rule", () => {
  it("trusts the origin that served the client, with or without an announcement", () => {
    expect(decideCallHost(null, { origin: ORIGIN, settings: SETTINGS, confirmed: () => false })).toMatchObject({ trust: "origin", api: ORIGIN });
    // Any sender may name the serving Parley itself: the token goes where the user already is.
    expect(decide(`${ORIGIN}/`, "@mallory:evil.example")).toMatchObject({ trust: "origin", api: ORIGIN });
  });

  it("trusts an https call API announced by a bot of an allowed server", () => {
    expect(decide("https://parley.b.example", "@parley:b.example")).toEqual({ trust: "bot", api: "https://parley.b.example", origin: "https://parley.b.example", host: "parley.b.example" });
    expect(decide("https://meet.x.gov.example/base/", "@meet-bot:x.gov.example")).toMatchObject({ trust: "bot", api: "https://meet.x.gov.example/base" });
    // A server name with a port is compared without it, unless the allow-list names one.
    expect(decide("https://p.b.example", "@parley:b.example:8448")).toMatchObject({ trust: "bot" });
    expect(decide("https://p.c.example", "@parley:c.example:8448")).toMatchObject({ trust: "bot" });
    expect(decide("https://p.c.example", "@parley:c.example:9999")).toMatchObject({ trust: "ask" });
  });

  it("asks about a URL sent by anyone else: a room admin, another localpart, a server not allowed", () => {
    expect(decide("https://evil.example", "@admin:b.example")).toEqual({ trust: "ask", api: "https://evil.example", origin: "https://evil.example", host: "evil.example" });
    expect(decide("https://evil.example", "@parley:evil.example")).toMatchObject({ trust: "ask" });
    expect(decide("https://evil.example", "@parley:b.example.evil.example")).toMatchObject({ trust: "ask" });
    expect(decide("https://evil.example:8443", "@x:y", { confirmed: ["https://evil.example:8443"] })).toMatchObject({ trust: "confirmed", host: "evil.example:8443" });
    // A yes is per origin: another port or scheme of the same name is asked again.
    expect(decide("https://evil.example", "@x:y", { confirmed: ["https://evil.example:8443"] })).toMatchObject({ trust: "ask" });
  });

  it("refuses plain http, except on loopback when the serving Parley allows it", () => {
    expect(decide("http://parley.b.example", "@parley:b.example")).toMatchObject({ trust: "refused" });
    expect(decide("http://127.0.0.11:9000", "@parley:b.example")).toMatchObject({ trust: "refused" });
    const loop = { settings: { insecureLoopback: true } };
    expect(decide("http://127.0.0.11:9000", "@parley:b.example", loop)).toMatchObject({ trust: "bot", api: "http://127.0.0.11:9000" });
    expect(decide("http://127.0.0.60:9000", "@mallory:b.example", loop)).toMatchObject({ trust: "ask", host: "127.0.0.60:9000" });
    expect(decide("http://localhost:9000", "@parley:b.example", loop)).toMatchObject({ trust: "bot" });
    expect(decide("http://10.0.0.1:9000", "@parley:b.example", loop)).toMatchObject({ trust: "refused" });
  });

  it("refuses what is no plain web address", () => {
    for (const api of ["javascript:alert(1)", "not a url", "https://u:p@parley.b.example", "https://parley.b.example/?x=1", "ftp://parley.b.example"]) {
      expect(decide(api, "@parley:b.example").trust, api).toBe("refused");
    }
  });

  it("knows a bot by its localpart and server", () => {
    expect(isParleyBot("@parley:a.example", SETTINGS)).toBe(true);
    expect(isParleyBot("@PARLEY:a.example", SETTINGS)).toBe(false);
    expect(isParleyBot("@parley:evil.example", SETTINGS)).toBe(false);
    expect(isParleyBot("parley:a.example", SETTINGS)).toBe(false);
  });

  it("remembers the user's yes per host, in storage", () => {
    const storage = memory();
    const trust = new CallTrust(ORIGIN, SETTINGS, new HostConsents(storage));
    const call = { api: "https://evil.example", sender: "@admin:b.example" };
    expect(trust.decide(call).trust).toBe("ask");
    expect(trust.confirm(call).trust).toBe("confirmed");
    expect(new CallTrust(ORIGIN, SETTINGS, new HostConsents(storage)).decide(call).trust).toBe("confirmed");
    // A broken entry is no yes at all.
    storage.setItem("parley.callHosts.v1", "{bad");
    expect(trust.decide(call).trust).toBe("ask");
  });
});

describe("the OpenID token guard", () => {
  it("asks the homeserver for a token only for a trusted host", async () => {
    const openId = vi.fn(async () => ({ access_token: "tok", token_type: "Bearer", matrix_server_name: "a.example", expires_in: 3600 }));
    await expect(guardedOpenId(decide("https://evil.example", "@admin:b.example"), openId)()).rejects.toBeInstanceOf(ParleyClientError);
    await expect(guardedOpenId(decide("http://evil.example", "@parley:b.example"), openId)()).rejects.toMatchObject({ human: expect.stringContaining("secure connection") });
    expect(openId).not.toHaveBeenCalled();
    await expect(guardedOpenId(decide("https://p.b.example", "@parley:b.example"), openId)()).resolves.toMatchObject({ access_token: "tok" });
  });
});

describe("pre-join asks about the call's host", () => {
  const media: PrejoinMediaPort = {
    list: async () => ({ audioinput: [], videoinput: [], audiooutput: [] }),
    open: async () => Promise.reject(new Error("no devices here")),
    stop: () => undefined,
    onDeviceChange: () => () => undefined,
  };

  it("cannot join until the user says yes, and the yes is recorded", () => {
    const trust = new CallTrust(ORIGIN, SETTINGS, new HostConsents(memory()));
    const call = { api: "https://evil.example", sender: "@admin:b.example" };
    const m = new PrejoinModel(media, { host: trust.decide(call), confirm: () => trust.confirm(call) });
    expect(m.state.get().host).toMatchObject({ trust: "ask", host: "evil.example" });
    expect(m.canJoin).toBe(false);
    m.confirmHost();
    expect(m.state.get().host).toMatchObject({ trust: "confirmed" });
    expect(m.canJoin).toBe(true);
    expect(trust.decide(call).trust).toBe("confirmed");
  });

  it("a refused host stays refused", () => {
    const confirm = vi.fn();
    const m = new PrejoinModel(media, { host: decide("http://evil.example", "@parley:b.example"), confirm });
    m.confirmHost();
    expect(confirm).not.toHaveBeenCalled();
    expect(m.canJoin).toBe(false);
  });
});
