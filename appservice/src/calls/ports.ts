// The seams the domain talks through. Implementations live in matrix/ (homeserver) and
// store/ (persistence); unit tests give fakes.
import type { ServerAclContent } from "./policy.ts";

export interface MeetingRoomSpec {
  /** Full alias, "#meet-team:example.org". */
  alias: string;
  /** Alias localpart without '#' and domain, "meet-team". */
  aliasLocalpart: string;
  name: string;
  joinRule: "public" | "knock" | "invite";
  encrypted: boolean;
  serverAcl: ServerAclContent;
  /** Content of the org.parley.call state event. */
  callInfo: Record<string, unknown>;
}

export interface Notice {
  text: string;
  html?: string;
}

export interface WidgetSpec {
  widgetId: string;
  url: string;
  name: string;
  data: Record<string, unknown>;
}

export class RoomAliasInUseError extends Error {
  constructor(alias: string) {
    super(`alias ${alias} is already in use`);
    this.name = "RoomAliasInUseError";
  }
}

export interface Homeserver {
  readonly botUserId: string;
  /** Creates a meeting room with its alias; throws RoomAliasInUseError if the alias exists. */
  createMeetingRoom(spec: MeetingRoomSpec): Promise<string>;
  resolveAlias(alias: string): Promise<string | undefined>;
  /** Points an existing room's alias at it again (after it was removed from the directory). */
  setAlias(alias: string, roomId: string): Promise<void>;
  joinRoom(roomId: string): Promise<void>;
  leaveRoom(roomId: string, reason: string): Promise<void>;
  /** Sends a notice; the same txnId never posts twice. */
  sendNotice(roomId: string, notice: Notice, txnId: string): Promise<void>;
  /** Whether the bot's power level lets it send this state event type in the room. */
  canSendState(roomId: string, eventType: string): Promise<boolean>;
  putWidget(roomId: string, widget: WidgetSpec): Promise<void>;
  removeWidget(roomId: string, widgetId: string): Promise<void>;
}

export interface Clock {
  now(): number;
}

export interface IdSource {
  callId(): string;
}
