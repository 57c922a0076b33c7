// The bot's view of its homeserver (the Homeserver port of calls/), over matrix-js-sdk's HTTP
// layer. No sync loop: everything the bot learns arrives in appservice transactions.
import { createClient, Method, MatrixError, type MatrixClient } from "matrix-js-sdk";
import type { Homeserver, InviteProfile, MeetingRoomSpec, MembershipAct, Notice, RoomMemberFacts, StateEventFacts, WidgetSpec } from "../calls/ports.ts";
import { creatorsArePrivileged, MODERATE_EVENT, RoomPower } from "../calls/roles.ts";
import { ParleyError } from "../errors.ts";
import { OutcomeUnknownError, RoomAliasInUseError } from "../calls/ports.ts";
import { CALL_STATE_EVENT } from "../calls/callState.ts";
import { WIDGET_EVENT } from "../calls/meetings.ts";
import { getLogger, sdkLogger } from "../log.ts";

/** MatrixRTC membership state must be writable by every participant. */
const CALL_MEMBER_EVENTS = ["org.matrix.msc3401.call.member", "m.rtc.member", "org.matrix.msc4143.rtc.member"];


const enc = encodeURIComponent;
const str = (v: unknown) => (typeof v === "string" ? v : undefined);

function errcodeOf(err: unknown): string | undefined {
  return err instanceof MatrixError ? err.errcode : undefined;
}

export class MatrixHomeserver implements Homeserver {
  readonly botUserId: string;
  readonly client: MatrixClient;
  private defaultRoomVersion: Promise<string> | undefined;
  private readonly log = getLogger("matrix.homeserver");

  constructor(opts: { url: string; asToken: string; botUserId: string }) {
    this.botUserId = opts.botUserId;
    this.client = createClient({
      baseUrl: opts.url,
      accessToken: opts.asToken,
      userId: opts.botUserId,
      localTimeoutMs: 30_000,
      logger: sdkLogger(getLogger("matrix-js-sdk")),
    });
  }

  private request<T>(method: Method, path: string, body?: unknown, query?: Record<string, string>): Promise<T> {
    return this.client.http.authedRequest<T>(method, path, query, body as Record<string, unknown> | undefined);
  }

  /** Registers the bot user in the appservice namespace (already registered is fine). */
  async ensureBotRegistered(displayName: string): Promise<void> {
    const localpart = this.botUserId.slice(1, this.botUserId.indexOf(":"));
    try {
      await this.request(Method.Post, "/register", { type: "m.login.application_service", username: localpart, inhibit_login: true });
      this.log.info({ userId: this.botUserId }, "bot user registered");
    } catch (err) {
      if (errcodeOf(err) !== "M_USER_IN_USE") throw err;
    }
    await this.request(Method.Put, `/profile/${enc(this.botUserId)}/displayname`, { displayname: displayName });
  }

  /** Waits until the homeserver answers (it may still be starting). */
  async waitUntilReachable(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        await this.client.getVersions();
        return;
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`homeserver not reachable: ${(err as Error).message}`, { cause: err });
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }

  /**
   * Whom the homeserver takes the as_token for (GET /account/whoami): the health check's probe
   * that it answers and still accepts Parley's registration. Gives up after `timeoutMs`.
   */
  async whoami(timeoutMs: number): Promise<string> {
    const res = await this.client.http.authedRequest<{ user_id: string }>(Method.Get, "/account/whoami", undefined, undefined, { localTimeoutMs: timeoutMs });
    return res.user_id;
  }

  private roomVersion(): Promise<string> {
    this.defaultRoomVersion ??= this.request<{ capabilities?: { "m.room_versions"?: { default?: string } } }>(
      Method.Get,
      "/capabilities",
    ).then((c) => c.capabilities?.["m.room_versions"]?.default ?? "10");
    return this.defaultRoomVersion;
  }

  async createMeetingRoom(spec: MeetingRoomSpec): Promise<string> {
    const version = await this.roomVersion();
    const events: Record<string, number> = {
      [CALL_STATE_EVENT]: 100,
      [WIDGET_EVENT]: 50,
      "m.room.server_acl": 100,
      "m.room.encryption": 100,
      "m.room.power_levels": 100,
      "m.room.join_rules": 100,
    };
    for (const t of CALL_MEMBER_EVENTS) events[t] = 0;
    events[MODERATE_EVENT] = spec.moderatorLevel;
    const initialState: { type: string; state_key: string; content: Record<string, unknown> }[] = [
      { type: "m.room.join_rules", state_key: "", content: { join_rule: spec.joinRule } },
      { type: "m.room.history_visibility", state_key: "", content: { history_visibility: "shared" } },
      { type: "m.room.guest_access", state_key: "", content: { guest_access: "forbidden" } },
      { type: "m.room.server_acl", state_key: "", content: { ...spec.serverAcl } },
      { type: CALL_STATE_EVENT, state_key: "", content: spec.callInfo },
    ];
    if (spec.accessRule) initialState.push({ type: "im.vector.room.access_rules", state_key: "", content: { rule: spec.accessRule } });
    if (spec.encrypted) {
      initialState.push({ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } });
    }
    try {
      const res = await this.request<{ room_id: string }>(Method.Post, "/createRoom", {
        room_alias_name: spec.aliasLocalpart,
        name: spec.name,
        visibility: "private",
        preset: spec.joinRule === "public" ? "public_chat" : "private_chat",
        room_version: version,
        initial_state: initialState,
        power_level_content_override: {
          users: creatorsArePrivileged(version) ? {} : { [this.botUserId]: 100 },
          events,
          invite: spec.moderatorLevel,
          kick: spec.moderatorLevel,
          ban: spec.moderatorLevel,
        },
      });
      return res.room_id;
    } catch (err) {
      if (errcodeOf(err) === "M_ROOM_IN_USE") throw new RoomAliasInUseError(spec.alias);
      // No answer (timeout, connection lost) or a failure on the homeserver's side: Synapse
      // writes the alias before the room's state, and goes on after a client gives up.
      const status = err instanceof MatrixError ? err.httpStatus : undefined;
      if (status === undefined || status >= 500) throw new OutcomeUnknownError(`creating ${spec.alias}`, { cause: err });
      throw err;
    }
  }

  /**
   * The room an alias names, undefined when the directory has none. What the homeserver cannot
   * resolve is the caller's problem, not Parley's: an alias it calls invalid (e.g. a full-width
   * colon where the port separator should be) is M_INVALID_PARAM, an alias whose server it
   * cannot reach (Synapse 1.163 answers 502) is M_NOT_FOUND.
   */
  async resolveAlias(alias: string): Promise<string | undefined> {
    try {
      return (await this.request<{ room_id: string }>(Method.Get, `/directory/room/${enc(alias)}`)).room_id;
    } catch (err) {
      if (errcodeOf(err) === "M_NOT_FOUND") return undefined;
      const status = err instanceof MatrixError ? err.httpStatus : undefined;
      if (status === 400) throw new ParleyError("M_INVALID_PARAM", `${alias} is not a valid room alias`);
      if (status === 502 || status === 504) throw new ParleyError("M_NOT_FOUND", `no room ${alias}: its server could not be reached`);
      throw err;
    }
  }

  async setAlias(alias: string, roomId: string): Promise<void> {
    try {
      await this.request(Method.Put, `/directory/room/${enc(alias)}`, { room_id: roomId });
    } catch (err) {
      if (err instanceof MatrixError && err.httpStatus === 409) throw new RoomAliasInUseError(alias);
      throw err;
    }
  }

  async mergeForks(roomId: string, txnId: string): Promise<void> {
    await this.request(Method.Put, `/rooms/${enc(roomId)}/send/org.matrix.dummy_event/${enc(txnId)}`, {});
  }

  async deleteAlias(alias: string): Promise<void> {
    try {
      await this.request(Method.Delete, `/directory/room/${enc(alias)}`);
    } catch (err) {
      if (errcodeOf(err) !== "M_NOT_FOUND") throw err;
    }
  }

  async joinRoom(roomId: string): Promise<void> {
    await this.request(Method.Post, `/rooms/${enc(roomId)}/join`, {});
  }

  async leaveRoom(roomId: string, reason: string): Promise<void> {
    await this.request(Method.Post, `/rooms/${enc(roomId)}/leave`, { reason });
  }

  async sendNotice(roomId: string, notice: Notice, txnId: string): Promise<void> {
    const content: Record<string, unknown> = { msgtype: "m.notice", body: notice.text };
    if (notice.html) Object.assign(content, { format: "org.matrix.custom.html", formatted_body: notice.html });
    await this.request(Method.Put, `/rooms/${enc(roomId)}/send/m.room.message/${enc(txnId)}`, content);
  }

  async stateEvent(roomId: string, type: string, stateKey = ""): Promise<StateEventFacts | undefined> {
    try {
      const e = await this.request<{ sender?: unknown; content?: unknown }>(
        Method.Get,
        `/rooms/${enc(roomId)}/state/${enc(type)}/${enc(stateKey)}`,
        undefined,
        { format: "event" },
      );
      if (typeof e.sender !== "string" || typeof e.content !== "object" || e.content === null) return undefined;
      return { sender: e.sender, content: e.content as Record<string, unknown> };
    } catch (err) {
      if (errcodeOf(err) === "M_NOT_FOUND") return undefined;
      throw err;
    }
  }

  async putState(roomId: string, type: string, content: Record<string, unknown>, stateKey = ""): Promise<void> {
    await this.request(Method.Put, `/rooms/${enc(roomId)}/state/${enc(type)}/${enc(stateKey)}`, content);
  }

  async canSendState(roomId: string, eventType: string, userId = this.botUserId): Promise<boolean> {
    const [create, pl] = await Promise.all([this.stateEvent(roomId, "m.room.create"), this.stateEvent(roomId, "m.room.power_levels")]);
    if (!pl) return true; // no power levels: everyone may send state (state_default 0)
    const power = new RoomPower({ create, powerLevels: pl.content }, { cohostLevel: 50, botUserId: "" });
    return power.levelOf(userId) >= power.neededForEvent(eventType);
  }

  async members(roomId: string, membership: "join" | "knock" | "invite"): Promise<RoomMemberFacts[]> {
    const res = await this.request<{ chunk?: unknown }>(Method.Get, `/rooms/${enc(roomId)}/members`, undefined, { membership });
    const chunk = Array.isArray(res.chunk) ? (res.chunk as Record<string, unknown>[]) : [];
    return chunk.flatMap((e) => {
      const content = (typeof e.content === "object" && e.content !== null ? e.content : {}) as Record<string, unknown>;
      const userId = str(e.state_key);
      if (!userId || content.membership !== membership) return [];
      return [{
        userId,
        displayName: str(content.displayname),
        avatarUrl: str(content.avatar_url),
        reason: str(content.reason),
        since: typeof e.origin_server_ts === "number" ? e.origin_server_ts : 0,
      }];
    });
  }

  async membershipAct(roomId: string, act: MembershipAct, userId: string, reason: string, profile?: InviteProfile): Promise<void> {
    if (act === "invite" && profile) {
      // The invite as its membership event, with the profile the user's knock stated: Synapse
      // fills in only what the content lacks (update_membership), so it asks the user's server
      // for neither (a user without an avatar: for that one only) before the invite can go. The
      // same act as POST /invite otherwise (the same checks, the same event).
      const content = { membership: "invite", reason, displayname: profile.displayName, ...(profile.avatarUrl ? { avatar_url: profile.avatarUrl } : {}) };
      await this.request(Method.Put, `/rooms/${enc(roomId)}/state/m.room.member/${enc(userId)}`, content);
      return;
    }
    await this.request(Method.Post, `/rooms/${enc(roomId)}/${act}`, { user_id: userId, reason });
  }

  async getMembership(roomId: string, userId: string): Promise<string | undefined> {
    try {
      const membership = (await this.stateEvent(roomId, "m.room.member", userId))?.content.membership;
      return typeof membership === "string" ? membership : undefined;
    } catch (err) {
      // The bot is not in the room (or never was): it cannot vouch for anyone there.
      if (errcodeOf(err) === "M_FORBIDDEN") return undefined;
      throw err;
    }
  }

  async putWidget(roomId: string, widget: WidgetSpec): Promise<void> {
    await this.request(Method.Put, `/rooms/${enc(roomId)}/state/${WIDGET_EVENT}/${enc(widget.widgetId)}`, {
      type: "m.custom",
      id: widget.widgetId,
      name: widget.name,
      url: widget.url,
      data: widget.data,
      creatorUserId: this.botUserId,
      waitForIframeLoad: true,
    });
  }

  async removeWidget(roomId: string, widgetId: string): Promise<void> {
    await this.request(Method.Put, `/rooms/${enc(roomId)}/state/${WIDGET_EVENT}/${enc(widgetId)}`, {});
  }
}
