// Cameras, microphones and screens: listing them, opening one, and turning the browser's
// exceptions into words (permission denied, no device, device busy).
import { ParleyClientError } from "../errors.ts";

export type MediaDevicesLike = Pick<MediaDevices, "enumerateDevices" | "getUserMedia"> &
  Partial<Pick<MediaDevices, "getDisplayMedia" | "addEventListener" | "removeEventListener">>;

export interface DeviceInfo {
  deviceId: string;
  label: string;
}

export interface DeviceLists {
  audioinput: DeviceInfo[];
  videoinput: DeviceInfo[];
  audiooutput: DeviceInfo[];
}

export async function listDevices(md: MediaDevicesLike): Promise<DeviceLists> {
  const all = await md.enumerateDevices();
  const lists: DeviceLists = { audioinput: [], videoinput: [], audiooutput: [] };
  const counts = { audioinput: 0, videoinput: 0, audiooutput: 0 };
  for (const d of all) {
    if (!(d.kind in lists) || !d.deviceId) continue;
    const kind = d.kind as keyof DeviceLists;
    counts[kind] += 1;
    // Labels are empty until permission is granted: name them by kind and number meanwhile.
    const fallback = `${kind === "audioinput" ? "Microphone" : kind === "videoinput" ? "Camera" : "Speaker"} ${counts[kind]}`;
    lists[kind].push({ deviceId: d.deviceId, label: d.label || fallback });
  }
  return lists;
}

export const CAMERA_CONSTRAINTS: MediaTrackConstraints = {
  width: { ideal: 1280 },
  height: { ideal: 720 },
  frameRate: { ideal: 30, max: 30 },
};
export const MIC_CONSTRAINTS: MediaTrackConstraints = {
  echoCancellation: true,
  noiseSuppression: true,
  autoGainControl: true,
};

function withDevice(base: MediaTrackConstraints, deviceId: string | undefined): MediaTrackConstraints {
  return deviceId ? { ...base, deviceId: { exact: deviceId } } : base;
}

export async function openTrack(md: MediaDevicesLike, kind: "audio" | "video", deviceId?: string): Promise<MediaStreamTrack> {
  if (!md || typeof md.getUserMedia !== "function") throw new ParleyClientError("MEDIA_UNSUPPORTED", "media");
  try {
    const stream = await md.getUserMedia(
      kind === "audio" ? { audio: withDevice(MIC_CONSTRAINTS, deviceId) } : { video: withDevice(CAMERA_CONSTRAINTS, deviceId) },
    );
    const track = stream.getTracks().find((t) => t.kind === kind);
    if (!track) throw new ParleyClientError("MEDIA_NOT_FOUND", "media");
    return track;
  } catch (err) {
    // A chosen device that went away: fall back to the default one.
    if (deviceId && err instanceof Error && (err.name === "OverconstrainedError" || err.name === "NotFoundError")) {
      return openTrack(md, kind);
    }
    throw mediaError(err, kind);
  }
}

/** The screen (or window, or tab) to share; null when the user cancels the picker. */
export async function openScreen(md: MediaDevicesLike): Promise<MediaStreamTrack | null> {
  if (typeof md.getDisplayMedia !== "function") {
    throw new ParleyClientError("MEDIA_UNSUPPORTED", "media", { human: "This browser can't share your screen." });
  }
  try {
    const stream = await md.getDisplayMedia({ video: { frameRate: { ideal: 15, max: 30 } }, audio: false });
    const track = stream.getVideoTracks()[0] ?? null;
    if (track) track.contentHint = "detail";
    return track;
  } catch (err) {
    if (err instanceof Error && (err.name === "NotAllowedError" || err.name === "AbortError")) return null;
    throw mediaError(err, "video");
  }
}

export function mediaError(err: unknown, kind: "audio" | "video"): ParleyClientError {
  if (err instanceof ParleyClientError) return err;
  const name = err instanceof Error ? err.name : "";
  const what = kind === "audio" ? "microphone" : "camera";
  const detail = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  switch (name) {
    case "NotAllowedError":
    case "SecurityError":
      return new ParleyClientError("MEDIA_DENIED", "media", {
        detail,
        human: `Parley isn't allowed to use your ${what}. Allow it in your browser's site settings, then try again.`,
      });
    case "NotFoundError":
    case "OverconstrainedError":
      return new ParleyClientError("MEDIA_NOT_FOUND", "media", { detail, human: `No ${what} was found.` });
    case "NotReadableError":
    case "AbortError":
      return new ParleyClientError("MEDIA_IN_USE", "media", {
        detail,
        human: `Your ${what} couldn't be started. Another app may be using it.`,
      });
    default:
      return new ParleyClientError("MEDIA_IN_USE", "media", { detail, human: `Your ${what} couldn't be started.` });
  }
}

export function stopTrack(track: MediaStreamTrack | null | undefined): void {
  if (track && track.readyState !== "ended") track.stop();
}

/** Devices as the pre-join and call view models see them. */
export function browserMediaPort(md: MediaDevicesLike | undefined = globalThis.navigator?.mediaDevices) {
  const need = (): MediaDevicesLike => {
    if (!md) throw new ParleyClientError("MEDIA_UNSUPPORTED", "media");
    return md;
  };
  return {
    list: () => (md ? listDevices(md) : Promise.resolve({ audioinput: [], videoinput: [], audiooutput: [] })),
    open: (kind: "audio" | "video", deviceId?: string) => openTrack(need(), kind, deviceId),
    openScreen: () => openScreen(need()),
    stop: (track: MediaStreamTrack | null) => stopTrack(track),
    onDeviceChange: (fn: () => void) => {
      md?.addEventListener?.("devicechange", fn);
      return () => md?.removeEventListener?.("devicechange", fn);
    },
  };
}
