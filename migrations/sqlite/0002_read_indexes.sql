-- Read side, matching migrations/postgres/0002: the newest-first index is
-- replaced by an ascending one (rows arrive in time order, so inserts append to
-- its last page; newest first reads it backwards) that also covers the four
-- dimensions, so a summary or the status page chart over a time range can read
-- only this index. SQLite has no INCLUDE: the dimensions are trailing key
-- columns, which change no order because id is unique.

create index if not exists attributions_time
    on attributions (app_id, attributed_at, id, source, campaign, adgroup, ad);

drop index if exists attributions_newest;
