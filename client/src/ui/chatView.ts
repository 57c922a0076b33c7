// The chat panel: the room's messages and a composer.
//
// Test ids: .msg.pending (our message on its way: "Sending…"), .msg.failed ("Not sent", and a
// .msg-retry button).
import type { ChatModel } from "../state/chatModel.ts";
import { h, type View } from "./dom.ts";

/**
 * The messages' time format, made once per page as the module loads (the meeting's page, before
 * the pre-join): a page's first Intl.DateTimeFormat loads the locale's data, 12-15 ms on an idle
 * machine and 40 ms on the benchmark's, which was spent inside the call screen's first drawing.
 */
const time = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

export function chatView(chat: ChatModel): View {
  const list = h("ol", { class: "chat-list", "aria-live": "polite", "aria-relevant": "additions" });
  const input = h("textarea", { id: "chat-input", rows: 2, maxLength: 4000, placeholder: "Message the room", "aria-label": "Message" });
  const send = h("button", { type: "submit", class: "primary" }, "Send");
  const cannot = h("p", { class: "hint" });
  const error = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "chat-form" }, input, send);
  const el = h("aside", { class: "chat", "aria-labelledby": "chat-title" }, h("h3", { id: "chat-title" }, "Chat"), list, cannot, error, form);

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    // A refused message (too long, not allowed here) stays in the composer; a queued one shows in
    // the list as sending, then sent, or not sent with Retry.
    if (chat.send(input.value)) input.value = "";
  });
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      form.requestSubmit();
    }
  });

  const rendered = new Map<string, HTMLElement>();
  const off = chat.state.subscribe((s) => {
    el.hidden = !s.open;
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    const items = s.lines.map((l) => {
      const key = `${l.id}|${l.senderName}|${l.pending}|${l.failed}`;
      const id = l.id;
      let li = rendered.get(key);
      if (!li) {
        li = h("li", { class: `msg ${l.kind}${l.own ? " own" : ""}${l.pending ? " pending" : ""}${l.failed ? " failed" : ""}` },
          h("div", { class: "msg-head" }, h("span", { class: "msg-sender", title: l.sender }, l.senderName), h("time", { datetime: new Date(l.ts).toISOString() }, time.format(l.ts))),
          h("div", { class: "msg-body" }, l.kind === "emote" ? `* ${l.senderName} ${l.body}` : l.body),
          l.pending ? h("div", { class: "msg-pending" }, "Sending…") : null,
          l.failed
            ? h("div", { class: "msg-failed" }, "Not sent ", h("button", { type: "button", class: "msg-retry", onclick: () => chat.retry(id) }, "Retry"))
            : null,
        );
        rendered.set(key, li);
      }
      return li;
    });
    const keep = new Set(items);
    for (const [k, v] of rendered) if (!keep.has(v)) rendered.delete(k);
    list.replaceChildren(...items);
    if (!items.length) list.append(h("li", { class: "hint" }, s.ready ? "No messages yet." : "Loading messages…"));
    if (atBottom) list.scrollTop = list.scrollHeight;
    cannot.textContent = s.cannotSend ?? "";
    cannot.hidden = !s.cannotSend;
    input.disabled = send.disabled = !!s.cannotSend || !s.ready;
    error.textContent = s.error ?? "";
  }, true);
  return { el, dispose: off };
}
