-- OpenID tokens that were used for a join (or are being checked right now), so each token
-- verifies once. Only a hash of the server name and the token is kept, until the token has
-- surely expired at its homeserver; expired rows are pruned as new tokens are claimed.
CREATE TABLE openid_token_used (
  token_hash TEXT PRIMARY KEY,
  expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX openid_token_used_expiry ON openid_token_used (expires_at);
