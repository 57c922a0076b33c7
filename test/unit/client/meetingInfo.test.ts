import { describe, expect, it, vi } from "vitest";
import { ParleyClientError } from "../../../client/src/errors.ts";
import { getMeetingInfo, isNewMeeting, isOwnMeetingAlias } from "../../../client/src/matrix/meetingInfo.ts";

const settings = { aliasPrefix: "meet-", serverName: "a.example" };

function answering(status: number, body: unknown) {
  return vi.fn(async (_url: string) => new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } }));
}

describe("meeting lookups before a join", () => {
  it("asks only about aliases of this Parley's namespace", async () => {
    expect(isOwnMeetingAlias("#meet-team:a.example", settings)).toBe(true);
    expect(isOwnMeetingAlias("#meet-team:b.example", settings)).toBe(false);
    expect(isOwnMeetingAlias("#team:a.example", settings)).toBe(false);
    expect(isOwnMeetingAlias("!room:a.example", settings)).toBe(false);
    const fetchFn = answering(200, { exists: false });
    for (const target of ["#meet-team:b.example", "!room:a.example", "#general:a.example"]) {
      expect(await isNewMeeting(target, { settings, apiBase: "http://p", fetchFn })).toBe(false);
    }
    expect(fetchFn).not.toHaveBeenCalled();
  });

  it("is a new meeting when this Parley has no room for the alias", async () => {
    const fetchFn = answering(200, { exists: false, alias: "#meet-tema:a.example", server: "a.example" });
    expect(await isNewMeeting("#meet-tema:a.example", { settings, apiBase: "http://p/", fetchFn })).toBe(true);
    expect(fetchFn).toHaveBeenCalledWith("http://p/_parley/v1/meetings/%23meet-tema%3Aa.example", expect.anything());
    expect(await isNewMeeting("#meet-team:a.example", { settings, apiBase: "http://p", fetchFn: answering(200, { exists: true }) })).toBe(false);
  });

  it("leaves a slug Parley does not make to the join (404), and turns other failures into errors", async () => {
    expect(await isNewMeeting("#meet-TEAM:a.example", { settings, apiBase: "http://p", fetchFn: answering(404, { errcode: "M_NOT_FOUND" }) })).toBe(false);
    await expect(getMeetingInfo("http://p", "#meet-x:a.example", answering(429, { errcode: "M_LIMIT_EXCEEDED" }))).rejects.toMatchObject({ code: "M_LIMIT_EXCEEDED" });
    await expect(getMeetingInfo("http://p", "#meet-x:a.example", answering(200, { nope: 1 }))).rejects.toMatchObject({ code: "BAD_RESPONSE" });
    const offline = vi.fn(async () => Promise.reject(new TypeError("fetch failed")));
    await expect(getMeetingInfo("http://p", "#meet-x:a.example", offline)).rejects.toBeInstanceOf(ParleyClientError);
  });
});
