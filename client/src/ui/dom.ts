// A tiny DOM helper: h("button", {type: "button", onclick}, "text"). Text is always set as text
// (never innerHTML), so nothing from the network becomes markup.

type Attrs = Record<string, string | number | boolean | null | undefined | EventListener>;
export type Child = Node | string | null | undefined | false;

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = String(v);
    else if (k in el && typeof v !== "string" && k !== "list") (el as unknown as Record<string, unknown>)[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

export function append(el: Element, children: Child[]): void {
  for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(c);
}

export function replace(el: Element, ...children: Child[]): void {
  el.replaceChildren();
  append(el, children);
}

/**
 * A toggle button: a constant label, aria-pressed for its state, an icon for the eye and a
 * tooltip saying what a click does.
 */
export function setToggle(button: HTMLButtonElement, opts: { pressed: boolean; label: string; icon: string; action: string }): void {
  // Views set their toggles on every change of their state, most often to what they show already:
  // the button is left as it is then (no new icon, no new label, no layout to do again).
  const key = `${opts.pressed}|${opts.label}|${opts.icon}|${opts.action}`;
  if (toggles.get(button) === key) return;
  toggles.set(button, key);
  button.setAttribute("aria-pressed", String(opts.pressed));
  button.title = opts.action;
  button.replaceChildren(icon(opts.icon), h("span", { class: "label" }, opts.label));
}

/** What each toggle button shows now (setToggle). */
const toggles = new WeakMap<HTMLButtonElement, string>();

/** Sets an element's text unless it shows that text already (a text written again is a node replaced, laid out again). */
export function setText(el: Node, text: string): void {
  if (el.textContent !== text) el.textContent = text;
}

/** Sets an attribute unless it has that value already (no mutation, no style to work out again). */
export function setAttr(el: Element, name: string, value: string): void {
  if (el.getAttribute(name) !== value) el.setAttribute(name, value);
}

export interface View {
  el: HTMLElement;
  dispose(): void;
}

/** An inline SVG icon from static path data (no icon font, no external asset). */
export function icon(path: string): Element {
  let made = icons.get(path);
  if (!made) {
    const t = document.createElement("template");
    // `path` is one of the constants in icons.ts, never data from the network.
    t.innerHTML = `<svg viewBox="0 0 24 24" aria-hidden="true" focusable="false" class="icon"><path d="${path}"/></svg>`;
    made = t.content.firstElementChild!;
    icons.set(path, made);
  }
  // A copy of the one parsed (parsing markup each time cost a busy page 20-60 ms at a call's start).
  return made.cloneNode(true) as Element;
}

/** Each icon parsed once, by its path data. */
const icons = new Map<string, Element>();

/** Fills a device picker, keeping it as it is when neither the list nor the choice changed. */
export function fillSelect(sel: HTMLSelectElement, list: { deviceId: string; label: string }[], chosen: string | null, none: string): void {
  const key = JSON.stringify(list) + chosen;
  if (sel.dataset.key === key) return;
  sel.dataset.key = key;
  sel.replaceChildren(...(list.length ? list.map((d) => h("option", { value: d.deviceId }, d.label)) : [h("option", { value: "" }, none)]));
  sel.disabled = !list.length;
  if (chosen) sel.value = chosen;
}

/** A stable colour for someone without an avatar. */
export function hueOf(s: string): number {
  let hash = 0;
  for (const c of s) hash = (hash * 31 + c.charCodeAt(0)) >>> 0;
  return hash % 360;
}

/** A small round avatar: the picture, or initials on a colour of the user's own. */
export function avatarEl(url: string | null, initials: string, userId: string): HTMLElement {
  if (url) return h("img", { class: "mini-avatar", src: url, alt: "" });
  const el = h("span", { class: "mini-avatar initials", "aria-hidden": "true" }, initials);
  el.style.setProperty("--hue", String(hueOf(userId)));
  return el;
}

/**
 * Keeps one element per item in `list`, in the items' order: made once by `make` (so its state,
 * such as an open menu, survives), refreshed by `update` on every call.
 */
export function keyed<T>(list: HTMLElement, cache: Map<string, HTMLElement>, items: readonly T[], key: (t: T) => string, make: (t: T) => HTMLElement, update: (el: HTMLElement, t: T) => void): void {
  const seen = new Set<string>();
  const els = items.map((t) => {
    const k = key(t);
    seen.add(k);
    let el = cache.get(k);
    if (!el) cache.set(k, (el = make(t)));
    update(el, t);
    return el;
  });
  for (const k of [...cache.keys()]) if (!seen.has(k)) cache.delete(k);
  const current = [...list.children];
  if (current.length !== els.length || els.some((e, i) => current[i] !== e)) list.replaceChildren(...els);
}
