// The device pickers during the call: the microphones and cameras there are (kept fresh when one
// is plugged in or out) and the one in use; choosing one asks the call view model to swap it.
import type { DeviceLists } from "../rtc/devices.ts";
import type { Kind } from "../rtc/governanceProtocol.ts";
import type { PrejoinMediaPort } from "./prejoinModel.ts";
import { Store } from "./store.ts";

export type DeviceListPort = Pick<PrejoinMediaPort, "list" | "onDeviceChange">;

/** The part of the call view model that owns the tracks. */
export interface DeviceSwitcher {
  switchDevice(kind: Kind, deviceId: string): Promise<void>;
  deviceIds(): { audio: string | null; video: string | null };
}

export interface CallDevicesState {
  devices: DeviceLists;
  audioDeviceId: string | null;
  videoDeviceId: string | null;
  /** The pickers are on screen. */
  open: boolean;
}

export class CallDevicesModel {
  readonly state: Store<CallDevicesState>;
  private readonly port: DeviceListPort;
  private readonly switcher: DeviceSwitcher;
  private off: (() => void) | null = null;
  private disposed = false;

  constructor(port: DeviceListPort, switcher: DeviceSwitcher) {
    this.port = port;
    this.switcher = switcher;
    const ids = switcher.deviceIds();
    this.state = new Store<CallDevicesState>({
      devices: { audioinput: [], videoinput: [], audiooutput: [] },
      audioDeviceId: ids.audio,
      videoDeviceId: ids.video,
      open: false,
    });
  }

  /** Lists the devices when the pickers open, and follows changes while they are. */
  async setOpen(open: boolean): Promise<void> {
    this.state.update({ open });
    this.off?.();
    this.off = open ? this.port.onDeviceChange(() => void this.refresh()) : null;
    if (open) await this.refresh();
  }

  async choose(kind: Kind, deviceId: string): Promise<void> {
    this.state.update(kind === "audio" ? { audioDeviceId: deviceId } : { videoDeviceId: deviceId });
    await this.switcher.switchDevice(kind, deviceId);
    this.showInUse();
  }

  dispose(): void {
    this.disposed = true;
    this.off?.();
    this.off = null;
  }

  private async refresh(): Promise<void> {
    try {
      const devices = await this.port.list();
      if (this.disposed) return;
      this.state.update({ devices });
      this.showInUse();
    } catch {
      // enumerateDevices failing leaves the lists as they were
    }
  }

  /** What the tracks really use (a device that went away falls back to the default). */
  private showInUse(): void {
    const ids = this.switcher.deviceIds();
    this.state.update({ audioDeviceId: ids.audio, videoDeviceId: ids.video });
  }
}
