import { AutoDiscovery } from "matrix-js-sdk";
import { afterEach, describe, expect, it } from "vitest";
import { ParleyClientError } from "../../../client/src/errors.ts";
import { findHomeserver, serverNameOf } from "../../../client/src/matrix/discovery.ts";

/** A fetch that answers from a table of URL -> [status, JSON body]; anything else fails like a dead host. */
function fakeFetch(table: Record<string, [number, unknown]>): typeof fetch {
  return (async (input: string | URL | Request) => {
    const url = String(input);
    const hit = table[url];
    if (!hit) throw new TypeError(`fetch failed: ${url}`);
    return new Response(JSON.stringify(hit[1]), { status: hit[0], headers: { "content-type": "application/json" } });
  }) as typeof fetch;
}

const VERSIONS: [number, unknown] = [200, { versions: ["v1.11", "v1.12"] }];

async function humanOf(p: Promise<unknown>): Promise<string> {
  const err = await p.then(() => null, (e: unknown) => e);
  expect(err).toBeInstanceOf(ParleyClientError);
  return (err as ParleyClientError).human;
}

afterEach(() => AutoDiscovery.setFetchFn((...a) => globalThis.fetch(...a)));

describe("serverNameOf", () => {
  it("takes the server name of a full Matrix id, ports included", () => {
    expect(serverNameOf("@bob:b.example")).toBe("b.example");
    expect(serverNameOf(" @bob:127.0.0.12:8448 ")).toBe("127.0.0.12:8448");
    expect(serverNameOf("bob")).toBeNull();
    expect(serverNameOf("@bob")).toBeNull();
    expect(serverNameOf("#room:b.example")).toBeNull();
  });
});

describe("findHomeserver (matrix-js-sdk AutoDiscovery)", () => {
  it("finds the homeserver from /.well-known/matrix/client and checks it answers /versions", async () => {
    AutoDiscovery.setFetchFn(fakeFetch({
      "https://b.example/.well-known/matrix/client": [200, { "m.homeserver": { base_url: "https://matrix.b.example/" } }],
      "https://matrix.b.example/_matrix/client/versions": VERSIONS,
    }));
    expect(await findHomeserver("b.example", { insecureLoopback: false })).toBe("https://matrix.b.example");
  });

  it("names the server when it publishes no .well-known", async () => {
    AutoDiscovery.setFetchFn(fakeFetch({ "https://b.example/.well-known/matrix/client": [404, {}] }));
    expect(await humanOf(findHomeserver("b.example", { insecureLoopback: false }))).toBe(
      "b.example doesn't say where its homeserver is (it publishes no /.well-known/matrix/client). Enter your homeserver's address above and sign in again.",
    );
  });

  it("names the server when it cannot be reached or its file is broken", async () => {
    const unreachable = "Couldn't find the homeserver of b.example: its /.well-known/matrix/client couldn't be reached or read. Check the part of your Matrix ID after the colon.";
    AutoDiscovery.setFetchFn(fakeFetch({}));
    expect(await humanOf(findHomeserver("b.example", { insecureLoopback: false }))).toBe(unreachable);
    AutoDiscovery.setFetchFn(fakeFetch({ "https://b.example/.well-known/matrix/client": [200, { "m.homeserver": {} }] }));
    expect(await humanOf(findHomeserver("b.example", { insecureLoopback: false }))).toBe(unreachable);
  });

  it("says when the named homeserver isn't one", async () => {
    AutoDiscovery.setFetchFn(fakeFetch({ "https://b.example/.well-known/matrix/client": [200, { "m.homeserver": { base_url: "https://www.b.example" } }] }));
    expect(await humanOf(findHomeserver("b.example", { insecureLoopback: false }))).toBe(
      "b.example names www.b.example as its homeserver, but it doesn't answer like a Matrix homeserver Parley can use.",
    );
  });

  it("sends no password over plain http, except to loopback where this Parley allows it", async () => {
    AutoDiscovery.setFetchFn(fakeFetch({
      "https://b.example/.well-known/matrix/client": [200, { "m.homeserver": { base_url: "http://matrix.b.example" } }],
      "http://matrix.b.example/_matrix/client/versions": VERSIONS,
      "https://127.0.0.12:8448/.well-known/matrix/client": [200, { "m.homeserver": { base_url: "http://127.0.0.12:8008/" } }],
      "http://127.0.0.12:8008/_matrix/client/versions": VERSIONS,
    }));
    expect(await humanOf(findHomeserver("b.example", { insecureLoopback: true }))).toBe(
      "b.example's homeserver (matrix.b.example) doesn't use a secure connection, so Parley won't send your password there.",
    );
    expect(await humanOf(findHomeserver("127.0.0.12:8448", { insecureLoopback: false }))).toContain("doesn't use a secure connection");
    expect(await findHomeserver("127.0.0.12:8448", { insecureLoopback: true })).toBe("http://127.0.0.12:8008");
  });

  it("turns a failing lookup into words naming the server", async () => {
    const find = async () => Promise.reject(new Error("boom"));
    expect(await humanOf(findHomeserver("b.example", { insecureLoopback: false, find }))).toBe("Couldn't look up the homeserver of b.example.");
  });
});
