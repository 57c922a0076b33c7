import { describe, expect, it } from "vitest";
import { prefetchingOpenId, type OpenIdToken } from "../../../client/src/matrix/openid.ts";

function source(opts: { expiresIn?: number } = {}) {
  let n = 0;
  const asked: number[] = [];
  let fail = false;
  const fetch = async (): Promise<OpenIdToken> => {
    asked.push(++n);
    if (fail) throw new Error("homeserver down");
    return { access_token: `t${n}`, token_type: "Bearer", matrix_server_name: "a.example", expires_in: opts.expiresIn ?? 3600 };
  };
  return { fetch, asked, failNext: (f: boolean) => (fail = f) };
}

describe("prefetchingOpenId", () => {
  it("asks for a token only when the join needs one, without a warm-up", async () => {
    const s = source();
    const openId = prefetchingOpenId(s.fetch);
    expect(s.asked).toEqual([]);
    expect((await openId()).access_token).toBe("t1");
  });

  it("hands the prefetched token to the next join, once: Parley refuses a token it has seen", async () => {
    const s = source();
    const openId = prefetchingOpenId(s.fetch);
    openId.warm();
    openId.warm(); // a second pre-join before the join: still one token ahead
    expect(s.asked).toEqual([1]);
    expect((await openId()).access_token).toBe("t1");
    expect((await openId()).access_token).toBe("t2");
    expect(s.asked).toEqual([1, 2]);
  });

  it("does not use a prefetched token with less than half its lifetime left", async () => {
    const s = source({ expiresIn: 600 });
    let now = 1_000_000;
    const openId = prefetchingOpenId(s.fetch, () => now);
    openId.warm();
    now += 300_001; // a pre-join left open for five minutes and more
    expect((await openId()).access_token).toBe("t2");
    openId.warm();
    now += 300_000;
    expect((await openId()).access_token).toBe("t3");
  });

  it("asks again when the prefetch failed", async () => {
    const s = source();
    const openId = prefetchingOpenId(s.fetch);
    s.failNext(true);
    openId.warm();
    await new Promise((r) => setTimeout(r, 0));
    s.failNext(false);
    expect((await openId()).access_token).toBe("t2");
  });
});
