// The bot's Matrix user id, from the config. Apart from registration.ts on purpose: that module
// brings matrix-appservice-bridge, whose loading took 0.8-0.9 s of every Parley start (2.0-2.3 s
// of module loading in all) for a function only `parley -g` and the samples need; `parley doctor`,
// run by cron, uses this one too (the bridge's deprecation warnings stay off its stderr).
import type { ParleyConfig } from "../config/schema.ts";

export function botUserId(config: ParleyConfig): string {
  return `@${config.appservice.botLocalpart}:${config.homeserver.domain}`;
}
