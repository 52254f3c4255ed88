-- See migrations/sqlite/0021: SQLite's feed numbering moved into the write path.
-- PostgreSQL orders its feed by the writing transaction (0013): nothing to change.
select 1;
