-- PostgreSQL twin of ../003-openid-tokens-used.sql.
CREATE TABLE openid_token_used (
  token_hash TEXT PRIMARY KEY,
  expires_at BIGINT NOT NULL
);
CREATE INDEX openid_token_used_expiry ON openid_token_used (expires_at);
