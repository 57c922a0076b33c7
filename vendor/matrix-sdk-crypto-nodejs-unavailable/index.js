"use strict";
// Loaded by @vector-im/matrix-bot-sdk at import time. Parley never uses its native crypto:
// every export is a Proxy that throws when it is called, constructed or read into.
const message =
  "@matrix-org/matrix-sdk-crypto-nodejs is not installed in Parley (its native library is only " +
  "downloadable from GitHub). Parley's crypto is vodozemac via @matrix-org/matrix-sdk-crypto-wasm.";
const fail = () => { throw new Error(message); };
const unavailable = new Proxy(function unavailable() {}, {
  apply: fail,
  construct: fail,
  get: (_t, prop) => (prop === "then" || typeof prop === "symbol" ? undefined : unavailable),
});
module.exports = new Proxy({}, {
  get: (_t, prop) => (prop === "__esModule" || typeof prop === "symbol" ? undefined : unavailable),
});
