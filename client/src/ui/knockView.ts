// Asking to join a meeting the user can't enter directly (the knock goes out at once), and waiting
// for a host, beside the pre-join's preview and devices (as in Meet and Teams): "Join when let in"
// enters the call as soon as a host lets the user in.
//
// Test ids (stable, for the browser tests):
//   knock               the card (data-status: checking | offer | waiting | declined | closed)
//   knock-waiting       "Waiting for a host to let you in…"
//   knock-note          while waiting: an optional message for the hosts;  knock-send-note: send it
//   knock-note-sent     "Your message was sent to the hosts."
//   knock-cancel        take the request back
//   knock-reason        the optional reason when asking again (after a cancel or a decline)
//   knock-ask           "Ask to join" / "Ask again"
//   knock-declined      "A host declined your request"
//   knock-error         why asking failed (e.g. the meeting is locked)
//   knock-closed        why asking is not possible here
//   lobby-join          "Join when let in" (while waiting, beside the preview); "Join now" once let in
//   lobby-join-armed    "You'll join as soon as a host lets you in." (or "joining the call" once let in)
//   lobby-admitted      "You're in: opening the meeting…"
import type { KnockModel } from "../state/knockModel.ts";
import type { MeetingModel } from "../state/meetingModel.ts";
import type { PrejoinModel } from "../state/prejoinModel.ts";
import { h, replace, type View } from "./dom.ts";
import { prejoinParts } from "./prejoinView.ts";

export interface KnockViewOptions {
  onHome: (() => void) | null;
  onRetry: () => void;
  /** The preview beside the wait (null: none, e.g. asking is not possible), its meeting, the user's name. */
  lobby: { prejoin: PrejoinModel; meeting: MeetingModel; userName: string } | null;
}

export function knockView(knock: KnockModel, opts: KnockViewOptions): View {
  const title = h("h2", { id: "knock-title" });
  const body = h("div", { class: "knock-body" });
  const reason = h("textarea", { id: "knock-reason", "data-testid": "knock-reason", rows: 3, maxLength: 500, placeholder: "Optional: who you are or why you'd like to join" });
  const ask = h("button", { type: "button", class: "primary", "data-testid": "knock-ask", onclick: () => void knock.ask(reason.value) });
  const cancel = h("button", { type: "button", "data-testid": "knock-cancel", onclick: () => void knock.cancel() }, "Cancel request");
  const note = h("textarea", { id: "knock-note", "data-testid": "knock-note", rows: 2, maxLength: 500, placeholder: "Optional: who you are or why you'd like to join" });
  const sendNote = h("button", { type: "button", "data-testid": "knock-send-note", onclick: () => void knock.addNote(note.value) }, "Send to the hosts");
  const retry = h("button", { type: "button", class: "primary", onclick: opts.onRetry }, "Try again");
  const home = opts.onHome ? h("button", { type: "button", onclick: opts.onHome }, "Back to start") : null;
  const lobby = opts.lobby ? lobbyParts(knock, opts.lobby) : null;
  const el = lobby
    ? h("section", { class: "prejoin knock", "aria-labelledby": "knock-title", "data-testid": "knock" },
        lobby.parts.preview,
        h("div", { class: "card prejoin-side" }, title, body, ...lobby.parts.controls, lobby.join))
    : h("section", { class: "card centered knock", "aria-labelledby": "knock-title", "data-testid": "knock" }, title, body);

  const off = knock.state.subscribe((s) => {
    el.dataset.status = s.status;
    switch (s.status) {
      case "checking":
        title.textContent = s.name;
        replace(body, h("p", { role: "status" }, "Checking whether you can ask to join…"));
        break;
      case "offer":
        title.textContent = `Ask to join ${s.name}`;
        if (s.sending) {
          replace(body, h("p", { role: "status" }, h("span", { class: "spinner", "aria-hidden": "true" }), "Asking to join…"));
          break;
        }
        ask.textContent = s.sending ? "Asking…" : "Ask to join";
        ask.disabled = reason.disabled = s.sending;
        replace(body,
          h("p", {}, "You need a host's approval to join this meeting. They'll see your name and what you write here."),
          h("label", { for: "knock-reason" }, "Message to the hosts"),
          reason,
          s.error ? h("p", { class: "error", role: "alert", "data-testid": "knock-error" }, s.error) : null,
          h("div", { class: "row" }, ask, home),
        );
        break;
      case "waiting":
        title.textContent = s.name;
        cancel.disabled = s.cancelling;
        note.disabled = sendNote.disabled = s.note === "sending";
        replace(body,
          h("p", { role: "status", "aria-live": "polite", "data-testid": "knock-waiting" }, h("span", { class: "spinner", "aria-hidden": "true" }), "Waiting for a host to let you in…"),
          h("p", { class: "hint" }, "Keep this page open while you wait."),
          s.note === "sent"
            ? h("p", { class: "hint", role: "status", "data-testid": "knock-note-sent" }, "Your message was sent to the hosts.")
            : h("div", { class: "knock-note" }, h("label", { for: "knock-note" }, "Message to the hosts"), note, h("div", { class: "row" }, sendNote)),
          s.error ? h("p", { class: "error", role: "alert", "data-testid": "knock-error" }, s.error) : null,
          h("div", { class: "row" }, cancel),
        );
        break;
      case "declined":
        title.textContent = s.name;
        ask.textContent = "Ask again";
        ask.disabled = reason.disabled = false;
        replace(body,
          h("p", { class: "error", role: "alert", "data-testid": "knock-declined" }, "A host declined your request."),
          h("div", { class: "row" }, ask, home),
        );
        break;
      case "closed":
        title.textContent = `Couldn't join ${s.name}`;
        replace(body,
          h("p", { class: "error", role: "alert", "data-testid": "knock-closed" }, s.message),
          h("div", { class: "row" }, retry, home),
        );
        break;
    }
    lobby?.update();
  }, true);
  return {
    el,
    dispose: () => {
      off();
      lobby?.dispose();
    },
  };
}

/** Beside the wait: the preview and devices, and "Join when let in" (or what it became). */
function lobbyParts(knock: KnockModel, lobby: NonNullable<KnockViewOptions["lobby"]>) {
  const { prejoin, meeting } = lobby;
  const parts = prejoinParts(prejoin, lobby.userName, () => undefined);
  const button = h("button", { type: "button", class: "primary join", "data-testid": "lobby-join", onclick: () => void meeting.join() });
  const armed = h("p", { class: "hint", role: "status", "data-testid": "lobby-join-armed" });
  const admitted = h("p", { role: "status", "data-testid": "lobby-admitted" }, h("span", { class: "spinner", "aria-hidden": "true" }), "You're in: opening the meeting…");
  const join = h("div", { class: "lobby-join" });
  const update = () => {
    const s = meeting.state.get();
    if (s.stage !== "knock" || s.knock !== knock) return;
    // Let in, the room opens; Join pressed now (or before) enters the call once it has.
    button.textContent = s.admitted ? "Join now" : "Join when let in";
    armed.textContent = s.admitted ? "You're in: joining the call…" : "You'll join as soon as a host lets you in.";
    if (s.joinWhenAdmitted) replace(join, armed);
    else if (s.admitted) replace(join, admitted, button);
    else if (knock.state.get().status === "waiting") replace(join, button);
    else replace(join);
  };
  const off = meeting.state.subscribe(update);
  return {
    parts,
    join,
    update,
    dispose: () => {
      off();
      parts.dispose();
    },
  };
}
