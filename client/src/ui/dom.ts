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
export function setToggle(button: HTMLButtonElement, opts: { pressed: boolean; label: string; icon: Element; action: string }): void {
  button.setAttribute("aria-pressed", String(opts.pressed));
  button.title = opts.action;
  button.replaceChildren(opts.icon, h("span", { class: "label" }, opts.label));
}

export interface View {
  el: HTMLElement;
  dispose(): void;
}

/** An inline SVG icon from static path data (no icon font, no external asset). */
export function icon(path: string): Element {
  const t = document.createElement("template");
  // `path` is one of the constants in icons.ts, never data from the network.
  t.innerHTML = `<svg viewBox="0 0 24 24" aria-hidden="true" focusable="false" class="icon"><path d="${path}"/></svg>`;
  return t.content.firstElementChild!;
}
