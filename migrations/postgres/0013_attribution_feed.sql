-- The pull feed (issue 15): GET /v1/apps/{id}/attributions/feed pages through an
-- app's attributions in commit order with a cursor a consumer may store.
--
-- Neither id nor attributed_at is commit order: two batches commit concurrently,
-- and the one that took its ids first may commit last. So each row records the id
-- of the transaction that wrote it. The default is filled per row (the batch's
-- insert names its columns, so it needs no change) and is the same for every row of
-- one transaction: pg_current_xact_id() gives the top-level transaction's id.
--
-- The feed reads (commit_tx, id) after the cursor and commit_tx below the xmin of
-- its snapshot: every transaction below xmin has ended, so no row can appear later
-- behind a position already handed out. README "Attribution feed" has the argument.
--
-- Stable, not volatile: the rows already here take the default evaluated once, this
-- migration's transaction id, without rewriting the table. They were all committed
-- before it, and come first, in id order (UUIDv7: the order they were created in).
alter table attributions add column commit_tx xid8 not null default pg_current_xact_id();

-- One index range per page: the app, then commit order. Plain CREATE INDEX blocks
-- writes while it is built (about a second per million rows); for a very large
-- table build it by hand first with CREATE INDEX CONCURRENTLY under this name.
create index if not exists attributions_feed on attributions (app_id, commit_tx, id);
