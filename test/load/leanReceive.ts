// A cheaper receive path for synthetic subscribers: werift keeps ICE, DTLS and the SRTP keys, but
// its per-packet work (SRTP authentication and decryption of every packet, RTP parsing, routing to
// receivers, NACK and receiver-report bookkeeping) is replaced by reading the RTP header, which
// SRTP leaves in the clear, and decrypting only the first packet of each video frame (to see key
// frames and their size, hence the simulcast layer). The measured figures are about Parley and
// Janus, not about this endpoint: the packets skipped are counted but neither authenticated nor
// decrypted, and no NACK or RTCP receiver report is sent back (Janus needs neither).
import { RtpPacket, type RTCDtlsTransport } from "werift";

export interface RtpSeen {
  ssrc: number;
  sequence: number;
  timestamp: number;
  /** Bytes on the wire (SRTP packet). */
  size: number;
  /** The decrypted RTP payload, or null when SRTP rejects the packet. Costs a decryption. */
  payload(): Buffer | null;
}

/** The parts of werift's RTCDtlsTransport (0.25) this relies on; checked at run time. */
interface DtlsInternals {
  srtpStarted: boolean;
  srtp: { decrypt(data: Buffer): Buffer };
  updateSrtpSession(): void;
  startSrtp(): void;
  iceTransport: { connection: { onData: { subscribe(fn: (data: Buffer) => void): unknown }; protocols?: { transport?: { socket?: unknown } }[] } };
}

/** The receive buffer asked of the kernel for each UDP socket (capped by net.core.rmem_max). */
export const RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024;

/**
 * Widens the receive buffers of the UDP sockets under `dtls` (werift's ICE host sockets): a
 * synthetic subscriber gets the bursts of dozens of streams on one socket, and a drop there would
 * count as the SFU's loss. Best effort: returns how many sockets took it.
 */
export function growReceiveBuffers(dtls: RTCDtlsTransport, bytes = RECEIVE_BUFFER_BYTES): number {
  let n = 0;
  for (const p of (dtls as unknown as DtlsInternals).iceTransport.connection.protocols ?? []) {
    const socket = p.transport?.socket as { setRecvBufferSize?(size: number): void } | undefined;
    try {
      socket?.setRecvBufferSize?.(bytes);
      n++;
    } catch {
      // not bound yet, or not UDP
    }
  }
  return n;
}

/**
 * Makes `dtls` hand every RTP packet to `onRtp` instead of werift's SRTP/RTP stack. Must be called
 * before DTLS connects (right after the first setRemoteDescription); false when werift's
 * internals are not what this expects (then the caller keeps werift's path).
 */
export function leanReceive(dtls: RTCDtlsTransport, onRtp: (p: RtpSeen) => void): boolean {
  const t = dtls as unknown as DtlsInternals;
  if (t.srtpStarted || typeof t.updateSrtpSession !== "function" || typeof t.startSrtp !== "function") return false;
  t.startSrtp = function (this: DtlsInternals) {
    if (this.srtpStarted) return;
    this.srtpStarted = true;
    this.updateSrtpSession();
    growReceiveBuffers(dtls);
    this.iceTransport.connection.onData.subscribe((data: Buffer) => {
      const b0 = data[0]!;
      if (data.length < 12 || b0 < 128 || b0 > 191) return; // not RTP/RTCP
      const b1 = data[1]!;
      if (b1 >= 192 && b1 <= 223) return; // RTCP: nothing for a synthetic subscriber to act on
      onRtp({
        ssrc: data.readUInt32BE(8),
        sequence: data.readUInt16BE(2),
        timestamp: data.readUInt32BE(4),
        size: data.length,
        payload: () => {
          try {
            return RtpPacket.deSerialize(this.srtp.decrypt(data)).payload;
          } catch {
            return null;
          }
        },
      });
    });
  };
  return true;
}
