-- See migrations/postgres/0005.
alter table partner_connections add column rate_limited integer not null default 0;
