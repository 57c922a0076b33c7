-- PostgreSQL twin of ../002-call-sfu.sql (the same statements).
-- The SFU room that carries a call: which node, which Janus room, and the room's secret, so a
-- restarted Parley (or a restarted Janus) can find, reuse or recreate it.
ALTER TABLE call ADD COLUMN sfu_node TEXT;
ALTER TABLE call ADD COLUMN sfu_room TEXT;
ALTER TABLE call ADD COLUMN sfu_secret TEXT;
