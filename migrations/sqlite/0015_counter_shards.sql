-- See migrations/postgres/0015: PostgreSQL splits the counters into shards so that
-- concurrent batches do not queue on them. SQLite has one writer: nothing to split.
select 1;
