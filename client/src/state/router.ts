// Hash routes: "#/" is home, "#/call/<room id or alias>" opens that meeting.

export type Route = { name: "home" } | { name: "call"; target: string };

export function parseRoute(hash: string): Route {
  const m = /^#\/call\/(.+)$/.exec(hash);
  if (!m) return { name: "home" };
  let target: string;
  try {
    target = decodeURIComponent(m[1]!);
  } catch {
    return { name: "home" };
  }
  return target.trim() ? { name: "call", target: target.trim() } : { name: "home" };
}

export function callHash(target: string): string {
  return `#/call/${encodeURIComponent(target)}`;
}
