// @vitest-environment happy-dom
// The toggle buttons every view sets on each change of its state (dom.ts setToggle): a change shows,
// and a state they show already leaves the button as it is (its icon and label nodes the same),
// so a busy page does not parse an icon and lay the button out again for nothing.
import { describe, expect, it } from "vitest";
import { h, icon, setToggle } from "../../../client/src/ui/dom.ts";
import { ICONS } from "../../../client/src/ui/icons.ts";

describe("setToggle", () => {
  it("applies what changed and leaves a button showing the same state untouched", () => {
    const b = h("button", { type: "button" });
    setToggle(b, { pressed: false, label: "Microphone", icon: ICONS.micOff, action: "Unmute your microphone" });
    expect(b.getAttribute("aria-pressed")).toBe("false");
    expect(b.title).toBe("Unmute your microphone");
    expect(b.querySelector(".label")?.textContent).toBe("Microphone");
    const [svg, label] = [...b.children];
    setToggle(b, { pressed: false, label: "Microphone", icon: ICONS.micOff, action: "Unmute your microphone" });
    expect(b.children[0]).toBe(svg);
    expect(b.children[1]).toBe(label);
    // Each part counts: the action alone (a host's mute names who did it) changes the title.
    setToggle(b, { pressed: false, label: "Microphone", icon: ICONS.micOff, action: "Muted by @host:a.example" });
    expect(b.title).toBe("Muted by @host:a.example");
    setToggle(b, { pressed: true, label: "Microphone", icon: ICONS.mic, action: "Mute your microphone" });
    expect(b.getAttribute("aria-pressed")).toBe("true");
    expect(b.title).toBe("Mute your microphone");
    expect(b.querySelector("path")?.getAttribute("d")).toBe(ICONS.mic);
    expect(b.children[0]).not.toBe(svg);
  });

  it("icons are copies: the same path twice gives two elements, each its own", () => {
    const a = icon(ICONS.mic);
    const b = icon(ICONS.mic);
    expect(a).not.toBe(b);
    expect(a.outerHTML).toBe(b.outerHTML);
    a.setAttribute("data-x", "1");
    expect(b.hasAttribute("data-x")).toBe(false);
    expect(icon(ICONS.mic).querySelector("path")?.getAttribute("d")).toBe(ICONS.mic);
  });
});
