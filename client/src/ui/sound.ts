// A short two-note chime for a knock on the lobby door, made with WebAudio (no audio file to
// download). Browsers start audio only after the page had a click; until then it stays silent.

export class Chime {
  private ctx: AudioContext | null = null;

  play(): void {
    try {
      const Ctor = globalThis.AudioContext;
      if (!Ctor) return;
      const ctx = (this.ctx ??= new Ctor());
      if (ctx.state === "suspended") void ctx.resume().catch(() => undefined);
      const now = ctx.currentTime;
      [880, 1318.5].forEach((freq, i) => {
        const osc = ctx.createOscillator();
        const gain = ctx.createGain();
        const t = now + i * 0.16;
        osc.type = "sine";
        osc.frequency.value = freq;
        gain.gain.setValueAtTime(0.0001, t);
        gain.gain.exponentialRampToValueAtTime(0.12, t + 0.02);
        gain.gain.exponentialRampToValueAtTime(0.0001, t + 0.28);
        osc.connect(gain).connect(ctx.destination);
        osc.start(t);
        osc.stop(t + 0.3);
      });
    } catch {
      // No audio output here: the badge still shows the knock.
    }
  }

  close(): void {
    void this.ctx?.close().catch(() => undefined);
    this.ctx = null;
  }
}
