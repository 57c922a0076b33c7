// The widget trusts only its host: matrix-widget-api's own postMessage transport listens on the
// window and checks neither the sender window nor its origin; acceptOnlyHost drops, in front of
// it, every message not from window.parent at the host's origin.
import { PostmessageTransport, WidgetApiDirection, WidgetApiToWidgetAction } from "matrix-widget-api";
import { afterEach, describe, expect, it, vi } from "vitest";
import { acceptOnlyHost, parseWidgetParams } from "../../../client/src/matrix/widget.ts";
import "./fakes.ts";

const HOST = "https://element.test";

/** A widget's window: an event target with a parent; messages are dispatched as the browser does. */
function widgetWindow() {
  const parent = { postMessage: vi.fn() };
  const sibling = { postMessage: vi.fn() };
  const win = Object.assign(new EventTarget(), { parent });
  const deliver = (data: unknown, from: { source: unknown; origin: string }) =>
    win.dispatchEvent(Object.defineProperty(new MessageEvent("message", { data, origin: from.origin }), "source", { value: from.source }));
  return { win, parent, sibling, deliver };
}

const request = (requestId: string) => ({ api: WidgetApiDirection.ToWidget, widgetId: "w1", requestId, action: WidgetApiToWidgetAction.UpdateState, data: { state: [] } });

const stop: (() => void)[] = [];
afterEach(() => {
  for (const s of stop.splice(0)) s();
  vi.restoreAllMocks();
});

describe("widget message filter", () => {
  it("hands the widget API only the host's messages from the parent window", () => {
    vi.spyOn(console, "log").mockImplementation(() => undefined);
    const { win, parent, sibling, deliver } = widgetWindow();
    stop.push(acceptOnlyHost(win as unknown as Window, HOST));
    // The real transport, listening on the same window as it does in the widget.
    const transport = new PostmessageTransport(WidgetApiDirection.FromWidget, "w1", parent as unknown as Window, win as unknown as Window);
    const seen: string[] = [];
    transport.on("message", (ev: CustomEvent<{ requestId: string }>) => seen.push(ev.detail.requestId));
    transport.start();
    stop.push(() => transport.stop());

    deliver(request("from-sibling-same-origin"), { source: sibling, origin: HOST });
    deliver(request("from-sibling-other-origin"), { source: sibling, origin: "https://evil.test" });
    deliver(request("no-source"), { source: null, origin: HOST });
    deliver(request("parent-wrong-origin"), { source: parent, origin: "https://evil.test" });
    deliver(request("from-host"), { source: parent, origin: HOST });
    expect(seen).toEqual(["from-host"]);
  });

  it("stops filtering once removed", () => {
    const { win, sibling, deliver } = widgetWindow();
    const remove = acceptOnlyHost(win as unknown as Window, HOST);
    const seen = vi.fn();
    win.addEventListener("message", seen);
    deliver({}, { source: sibling, origin: HOST });
    expect(seen).not.toHaveBeenCalled();
    remove();
    deliver({}, { source: sibling, origin: HOST });
    expect(seen).toHaveBeenCalledTimes(1);
  });
});

describe("the widget's host origin", () => {
  const url = "?roomId=%21r%3Ax&userId=%40a%3Ax&widgetId=w1&parentUrl=https%3A%2F%2Felement.test%2F%23%2Froom";

  it("is parentUrl's origin, checked against the browser's ancestorOrigins where it has them", () => {
    expect(parseWidgetParams(url, () => "DEV")).toMatchObject({ parentOrigin: HOST });
    expect(parseWidgetParams(url, () => "DEV", HOST)).toMatchObject({ parentOrigin: HOST });
    expect(parseWidgetParams(url, () => "DEV", "https://evil.test")).toEqual({ error: expect.stringContaining("isn't the Matrix app its URL names") });
  });

  it("cannot be an opaque origin", () => {
    expect(parseWidgetParams(url.replace(/parentUrl=[^&]+/, "parentUrl=data%3Atext%2Fhtml%2Cx"), () => "DEV")).toEqual({ error: expect.stringContaining("no origin") });
  });
});
