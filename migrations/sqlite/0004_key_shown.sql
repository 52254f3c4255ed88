-- See migrations/postgres/0004: false while a created key has not been printed yet.
alter table api_keys add column shown integer not null default 1 check (shown in (0, 1));
