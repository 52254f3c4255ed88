-- See migrations/postgres/0016: PostgreSQL drops the foreign keys to apps from the
-- tables every batch writes. SQLite keeps them (one writer; dropping a column
-- constraint would mean rebuilding each table).
select 1;
