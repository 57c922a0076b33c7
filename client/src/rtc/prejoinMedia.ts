// The media connection made in the pre-join (docs/join.md, seventeenth pass): the standby
// socket's hello asks for the subscription to the call's feeds, the server answers with an offer
// whose m-lines it made paused, and this device answers it and connects (ICE, DTLS) while the
// person looks at their preview. At Join the call takes the socket and this subscriber together,
// in one task: the server seats the subscription at the hello if its answer went out on the
// standby (the hello's `prepared`), and it forwards from then on. Its receivers have the call's
// own transforms from the answer on (the call's E2EE worker, made for it in the pre-join, its key
// mode read from the room). Nothing is forwarded before: the pre-join receives no one's media.
// The offer holds the call's audio (docs/join.md, twenty-sixth pass: a video m-line connected in
// the pre-join made its publisher's encoder ignore the key frame request of a Join within the
// next 300 ms). Once connected, the server adds the videos it held back, paused, and pushes that
// renegotiation's offer (a second `prepared`), answered here; a Join that crossed it gets the
// offer with its hello, and one before it subscribes to them beside the publish.
import { getLogger } from "../log.ts";
import { markStep } from "../timeline.ts";
import type { StandbyPrepare, StandbySocket } from "./signalling.ts";
import { Subscriber } from "./subscriber.ts";
import { browserPeerFactory, type MediaTransformHook, type PeerFactory } from "./transforms.ts";

export interface PrejoinPeer {
  iceServers: RTCIceServer[];
  iceTransportPolicy: RTCIceTransportPolicy;
  /**
   * The call's own transforms (its E2EE worker), which its receivers go to at the answer: Chromium
   * would not run their frames through transforms set later (subscriber.ts, `adopt`).
   */
  transforms: MediaTransformHook;
}

export class PrejoinSubscription implements StandbyPrepare {
  private readonly log = getLogger("prejoin");
  private socket: StandbySocket | null = null;
  private subscriber: Subscriber | null = null;
  private done = false;
  private readonly peer: () => Promise<PrejoinPeer | null>;
  private readonly peerFactory: PeerFactory;

  /** `peer`: the grant's ICE servers (null: no grant, nothing is prepared). */
  constructor(peer: () => Promise<PrejoinPeer | null>, peerFactory: PeerFactory = browserPeerFactory) {
    this.peer = peer;
    this.peerFactory = peerFactory;
  }

  /** The standby socket the subscription's requests go on (its `prepare` is this). */
  bind(socket: StandbySocket): void {
    this.socket = socket;
  }

  onPrepared(push: Parameters<StandbyPrepare["onPrepared"]>[0]): void {
    if (this.done) return;
    if (this.subscriber) {
      // The second: the held videos, added once connected (answered here, or at Join if the call took the socket first).
      void this.subscriber.renegotiated({ jsep: push.jsep, streams: push.streams }).then(
        () => markStep("held-answered"),
        (err: unknown) => this.log.warn("the pre-join's videos were not answered on the standby", { err: String(err) }),
      );
      return;
    }
    void (async () => {
      const peer = await this.peer().catch(() => null);
      const socket = this.socket;
      if (!peer || !socket || this.subscriber || this.done || !socket.alive) return;
      // A knocker's grant carried no ICE servers: its offer brings them, once let in.
      const ice = push.ice ?? peer;
      const subscriber = new Subscriber({
        signalling: socket,
        iceServers: ice.iceServers,
        iceTransportPolicy: ice.iceTransportPolicy,
        peerFactory: this.peerFactory,
        transforms: peer.transforms,
      });
      this.subscriber = subscriber;
      await subscriber.prepared({ jsep: push.jsep, streams: push.streams }, push.held);
    })().catch((err: unknown) => {
      this.log.warn("the pre-join's subscription was not answered", { err: String(err) });
      this.close();
    });
  }

  onGone(): void {
    this.close();
  }

  /**
   * At Join, in the task that takes the standby socket: the subscriber if its answer went out on
   * that socket (the server seats it at the hello), else nothing (closed). Once.
   */
  take(): Subscriber | null {
    const s = this.subscriber;
    this.subscriber = null;
    this.done = true;
    if (s && this.socket?.answerSent) return s;
    s?.close();
    return null;
  }

  close(): void {
    this.done = true;
    this.subscriber?.close();
    this.subscriber = null;
  }
}
