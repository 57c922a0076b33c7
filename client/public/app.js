// Parley's web client, first cut: sign in to your own homeserver, open a meeting room by link,
// alias or room id (joining a #<prefix><name> alias creates the room), see who is in it.
// Media, the call grid and E2EE arrive with the client rewrite (issue 3 and 4).
const $ = (id) => document.getElementById(id);
const show = (id) => { for (const s of ["login", "open", "meeting"]) $(s).hidden = s !== id && !(id === "meeting" && s === "open"); };
const status = (text) => { $("status").textContent = text ?? ""; };

const settings = await (await fetch("/_parley/v1/client-config")).json();
let session = JSON.parse(sessionStorage.getItem("parley.session") ?? "null");

async function matrix(method, path, body) {
  const res = await fetch(`${session.homeserver}/_matrix/client/v3${path}`, {
    method,
    headers: { authorization: `Bearer ${session.accessToken}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(`${json.errcode ?? res.status}: ${json.error ?? res.statusText}`);
  return json;
}

function meetingTarget(input) {
  const t = input.trim();
  if (t.startsWith("#") || t.startsWith("!")) return t;
  return `#${settings.aliasPrefix}${t.toLowerCase().replace(/[^a-z0-9._=-]+/g, "-")}:${settings.serverName}`;
}

async function openMeeting(target) {
  status("Joining…");
  const { room_id: roomId } = await matrix("POST", `/join/${encodeURIComponent(target)}`, {});
  const state = await matrix("GET", `/rooms/${encodeURIComponent(roomId)}/state`);
  const name = state.find((e) => e.type === "m.room.name")?.content.name ?? roomId;
  const call = state.find((e) => e.type === "org.parley.call")?.content;
  $("meeting-name").textContent = name;
  $("meeting-alias").textContent = call?.alias ?? target;
  const members = state.filter((e) => e.type === "m.room.member" && e.content.membership === "join");
  $("members").replaceChildren(
    ...members.map((m) => Object.assign(document.createElement("li"), { textContent: m.content.displayname ?? m.state_key })),
  );
  location.hash = `#/call/${encodeURIComponent(target)}`;
  show("meeting");
  status("");
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const homeserver = String(f.get("homeserver")).replace(/\/$/, "");
  const user = String(f.get("user"));
  try {
    const res = await fetch(`${homeserver}/_matrix/client/v3/login`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ type: "m.login.password", identifier: { type: "m.id.user", user }, password: f.get("password"), initial_device_display_name: "Parley web" }),
    });
    const json = await res.json();
    if (!res.ok) throw new Error(`${json.errcode}: ${json.error}`);
    session = { homeserver, accessToken: json.access_token, userId: json.user_id };
    sessionStorage.setItem("parley.session", JSON.stringify(session));
    await route();
  } catch (err) {
    status(`Sign-in failed: ${err.message}`);
  }
});

$("open-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  openMeeting(meetingTarget(String(new FormData(ev.target).get("target")))).catch((err) => status(`Could not open the meeting: ${err.message}`));
});

$("logout").addEventListener("click", async () => {
  await matrix("POST", "/logout", {}).catch(() => undefined);
  sessionStorage.removeItem("parley.session");
  session = null;
  await route();
});

async function route() {
  $("whoami").textContent = session?.userId ?? "";
  if (!session) {
    $("login-form").homeserver.value = settings.homeserverUrl;
    show("login");
    return;
  }
  show("open");
  const m = /^#\/call\/(.+)$/.exec(location.hash);
  if (m) await openMeeting(decodeURIComponent(m[1])).catch((err) => status(`Could not open the meeting: ${err.message}`));
}

await route();
