-- Read side: the summary route and the status page chart count one app's
-- attributions over a time range by one dimension. With 0001 that is a scan of the
-- whole table (parallel where cores are free): at 1,000,000 attributions of one
-- app, a 30-day summary took up to ~300 ms on one core (100-145 ms with two
-- parallel workers), and that cost grows with every app's whole history, not
-- with the range asked for.
--
-- attributions_newest (app_id, attributed_at desc, id desc) is replaced by
-- attributions_time (app_id, attributed_at, id) covering the four dimensions:
-- - a summary becomes an index-only range scan of that app's window: 85-110 ms on
--   one core, 50-105 ms as run on two shared cores, for 30 days of 1,000,000;
-- - the newest-first listing and its cursor read it backwards, same plan;
-- - ascending, because rows arrive in time order: inserts then fill its last page,
--   which PostgreSQL splits 90/10, whereas the descending 0001 index takes every
--   insert on its first page and splits 50/50 (1,000,000 inserts in time order:
--   175 MB descending against 100 MB ascending for this covering index);
-- - replaced rather than added beside, so inserts maintain no extra index.
--
-- The users filters need nothing new: the 0001 (app_id, <dimension>,
-- attributed_at) indexes give each filter its rows newest first, and with at most a
-- few rows sharing an attributed_at the id tie-break is an incremental sort of a
-- page (p99 under 2 ms for each dimension and all four together at 1,000,000).
--
-- Plain CREATE INDEX: it blocks writes to attributions while it builds (about a
-- second per million rows); for a very large table, build it by hand first with
-- CREATE INDEX CONCURRENTLY under this name, and this migration keeps it.

create index if not exists attributions_time
    on attributions (app_id, attributed_at, id)
    include (source, campaign, adgroup, ad);

drop index if exists attributions_newest;
