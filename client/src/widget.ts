// Parley inside Element's widget iframe: the room and user come from the widget URL, identity
// from the widget API's OpenID token; no sign-in, no sync loop of our own.
import "./ui/styles.css";
import { toClientError } from "./errors.ts";
import { AvatarCache } from "./matrix/media.ts";
import { safeStorage } from "./matrix/session.ts";
import { parseWidgetParams, WidgetSession } from "./matrix/widget.ts";
import { browserMediaPort } from "./rtc/devices.ts";
import { wireCall } from "./services.ts";
import { MeetingModel } from "./state/meetingModel.ts";
import { PrejoinModel } from "./state/prejoinModel.ts";
import { h } from "./ui/dom.ts";
import { meetingView } from "./ui/meetingView.ts";

/** Element doesn't tell the widget its device id: one per tab, stable across reloads when allowed. */
function newDeviceId(): string {
  const storage = safeStorage("sessionStorage");
  const key = "parley.widget.device";
  let id = storage.getItem(key);
  if (!id) {
    id = `PARLEYW${crypto.getRandomValues(new Uint32Array(2)).join("").slice(0, 10)}`;
    storage.setItem(key, id);
  }
  return id;
}

function fatal(root: HTMLElement, message: string): void {
  root.replaceChildren(h("main", { id: "main" }, h("div", { class: "card centered" }, h("h2", {}, "Parley can't start here"), h("p", { class: "error", role: "alert" }, message))));
}

async function boot(root: HTMLElement): Promise<void> {
  document.body.classList.add("in-widget");
  // The host's origin: the parentUrl Element appends, checked against the browser's own record of
  // the embedding page where it keeps one (ancestorOrigins: Chromium, Safari).
  if (window.parent === window) return fatal(root, "Parley's call widget runs inside your Matrix app. Open the call from the room's widget there.");
  const params = parseWidgetParams(location.search, newDeviceId, location.ancestorOrigins?.[0] ?? null);
  if ("error" in params) return fatal(root, params.error);
  root.replaceChildren(h("p", { class: "centered", role: "status" }, "Connecting to your Matrix app…"));
  let widget: WidgetSession;
  try {
    widget = await WidgetSession.connect(params);
  } catch (err) {
    return fatal(root, toClientError(err, "room").human);
  }
  const avatars = new AvatarCache((mxc) => widget.downloadAvatar(mxc));
  const meeting = new MeetingModel(params.roomId, {
    openRoom: async () => {
      // Name and our display name are cosmetic: without them the call still works.
      const [names, members] = await Promise.all([widget.roomState("m.room.name"), widget.roomState("m.room.member")]);
      const n = (names.find((e) => e.state_key === "")?.content as { name?: unknown } | undefined)?.name;
      const me = (members.find((e) => e.state_key === params.userId)?.content as { displayname?: unknown } | undefined)?.displayname;
      return {
        roomId: params.roomId,
        name: typeof n === "string" && n ? n : "this room",
        // The widget's call is always hosted by the Parley that served it.
        call: null,
        host: { trust: "origin" as const, api: location.origin, origin: location.origin, host: location.host },
        encrypted: false,
        ...(typeof me === "string" && me ? { selfName: me } : {}),
      };
    },
    prejoin: () => new PrejoinModel(browserMediaPort()),
    call: (room, local) =>
      wireCall(room, local, {
        userId: params.userId,
        deviceId: params.deviceId,
        callApi: location.origin,
        openId: widget.openId,
        membership: widget.membershipTransport(),
        feed: widget.roomFeed(),
        // Media keys travel as to-device messages Element Olm-encrypts for us.
        keys: () => widget.keyChannel(),
        avatars: avatars.get,
        onStage: (inCall) => void widget.setAlwaysOnScreen(inCall),
      }),
  });
  const main = h("main", { id: "main" });
  root.replaceChildren(main);
  const view = meetingView(meeting, { userName: params.userId, onHome: null });
  main.append(view.el);
  await meeting.open();
}

void boot(document.getElementById("app")!);
