// What the rest of Parley may ask of the bot's Olm device. No imports: calls/ can depend on it
// (or copy it into calls/ports.ts) without reaching a crypto library.

export interface DeviceRef {
  userId: string;
  deviceId: string;
}

/** The bot's device as other devices see it in /keys/query. */
export interface BotIdentity {
  deviceId: string;
  /** Unpadded base64, as in device_keys. */
  curve25519: string;
  ed25519: string;
}

export interface ToDeviceOutcome {
  /** Devices the message was Olm-encrypted for and sent to. */
  sent: DeviceRef[];
  /** Devices the homeserver does not know, or without keys to start an Olm session with. */
  unreachable: DeviceRef[];
}

export interface BotDevice {
  identity(): BotIdentity;
  /**
   * Olm-encrypts `content` as an event of `type` for each device (its own ciphertext each) and
   * sends them as one m.room.encrypted to-device request. Throws when the homeserver cannot be
   * reached; devices that cannot be encrypted for are reported, not thrown.
   */
  sendToDevices(type: string, devices: DeviceRef[], content: Record<string, unknown>): Promise<ToDeviceOutcome>;
}
