-- Stale detection (issue 14) reads, per (app, partner), the newest accepted postback
-- and the gaps between the accepted postbacks of the last days. Without this index
-- both are scans of the app's rows in every partition they touch; with it, the
-- newest is one index probe per partition and the gaps an index-only range scan.
--
-- Lean on purpose: three columns, no INCLUDE. Every insert into postback_events
-- maintains it (one more B-tree entry per accepted postback, appended at the end of
-- its (app, partner) range since rows arrive in time order).
--
-- Plain CREATE INDEX on the partitioned table builds it on every monthly partition
-- and blocks writes meanwhile (about a second per million rows). For a very large
-- table build it by hand first (CREATE INDEX ... ON ONLY postback_events, then
-- CREATE INDEX CONCURRENTLY on each partition and ALTER INDEX ... ATTACH PARTITION)
-- under this name, and this migration keeps it.
create index if not exists postback_events_partner_received
    on postback_events (app_id, partner, received_at);
