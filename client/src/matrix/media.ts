// Avatars through the homeserver's authenticated media endpoints, fetched with the access token
// and shown from blob: URLs (no external image URLs, no token in a URL).
import type { MatrixHttp } from "./http.ts";

export function parseMxc(mxc: string): { server: string; mediaId: string } | null {
  const m = /^mxc:\/\/([^/]+)\/([A-Za-z0-9_-]+)$/.exec(mxc);
  return m ? { server: m[1]!, mediaId: m[2]! } : null;
}

/** Loads an mxc:// avatar as a blob: URL; null when it can't. */
export type AvatarSource = (mxc: string) => Promise<string | null>;

export class AvatarCache {
  private readonly load: (mxc: string) => Promise<Blob>;
  private readonly entries = new Map<string, Promise<string | null>>();
  private readonly urls: string[] = [];

  constructor(load: (mxc: string) => Promise<Blob>) {
    this.load = load;
  }

  get: AvatarSource = (mxc) => {
    let entry = this.entries.get(mxc);
    if (!entry) {
      entry = this.load(mxc).then(
        (blob) => {
          const url = URL.createObjectURL(blob);
          this.urls.push(url);
          return url;
        },
        () => null,
      );
      this.entries.set(mxc, entry);
    }
    return entry;
  };

  dispose(): void {
    for (const u of this.urls.splice(0)) URL.revokeObjectURL(u);
    this.entries.clear();
  }
}

/** GET /_matrix/client/v1/media/thumbnail/{server}/{mediaId} with the access token. */
export function homeserverThumbnails(http: MatrixHttp, size = 96): (mxc: string) => Promise<Blob> {
  return async (mxc) => {
    const parsed = parseMxc(mxc);
    if (!parsed) throw new Error("not an mxc URI");
    const url = http.url(`/media/thumbnail/${encodeURIComponent(parsed.server)}/${encodeURIComponent(parsed.mediaId)}`, {
      prefix: "/_matrix/client/v1",
      query: { width: size, height: size, method: "crop", animated: "false" },
    });
    const blob = await http.fetchBlob(url);
    if (!blob.type.startsWith("image/")) throw new Error(`not an image: ${blob.type}`);
    return blob;
  };
}
