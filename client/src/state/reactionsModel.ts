// Reactions on screen: each one shows for a few seconds with who sent it, then goes. A burst is
// capped so a stream of them cannot fill the screen.
import type { Reaction } from "../rtc/governanceProtocol.ts";
import type { Timers } from "../timers.ts";
import { Store } from "./store.ts";

export interface ShownReaction {
  id: number;
  userId: string;
  name: string;
  emoji: Reaction;
}

export const REACTION_MS = 4000;
const MAX_SHOWN = 12;

export class ReactionsModel {
  readonly state = new Store<ShownReaction[]>([]);
  private readonly timers: Timers;
  private readonly showMs: number;
  private readonly pending = new Map<number, unknown>();
  private nextId = 1;

  constructor(timers: Timers, showMs = REACTION_MS) {
    this.timers = timers;
    this.showMs = showMs;
  }

  add(userId: string, name: string, emoji: Reaction): void {
    const id = this.nextId++;
    const shown = [...this.state.get(), { id, userId, name, emoji }];
    for (const gone of shown.splice(0, Math.max(0, shown.length - MAX_SHOWN))) this.drop(gone.id);
    this.state.set(shown);
    this.pending.set(id, this.timers.setTimeout(() => this.remove(id), this.showMs));
  }

  dispose(): void {
    for (const id of [...this.pending.keys()]) this.drop(id);
    this.state.set([]);
  }

  private remove(id: number): void {
    this.pending.delete(id);
    this.state.set((list) => list.filter((r) => r.id !== id));
  }

  private drop(id: number): void {
    this.timers.clearTimeout(this.pending.get(id));
    this.pending.delete(id);
  }
}
