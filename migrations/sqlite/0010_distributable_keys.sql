-- See migrations/postgres/0010: SQLite serves one node and needs no
-- distributable keys; the number is kept so both folders count alike.
select 1;
