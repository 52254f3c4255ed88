-- The per-(app, partner) counters, split into shards. Every batch adds to the
-- counter rows of the apps it holds and keeps them locked until it commits, so with
-- one row per (app, partner) the batches of a busy app committed one after another
-- (each waiting for the previous one's WAL flush), however many writers ran. Each
-- batch in flight now adds to a shard of its own (see `CounterShards` in the store),
-- so concurrent batches commit together; readers sum the shards through the view
-- `partner_connections`, which keeps the table's name, columns and one row per
-- (app, partner) for operators' queries (SPEC §3).
alter table partner_connections rename to partner_connection_shards;
alter table partner_connection_shards rename constraint partner_connections_pkey
    to partner_connection_shards_pkey;
alter table partner_connection_shards add column shard smallint not null default 0;
alter table partner_connection_shards drop constraint partner_connection_shards_pkey;
alter table partner_connection_shards add primary key (app_id, partner, shard);

create view partner_connections as
select app_id, partner,
    case when bool_or(status = 'connected') then 'connected' else 'not_connected' end
        as status,
    max(last_success_at) as last_success_at,
    sum(installs)::bigint as installs,
    sum(events)::bigint as events,
    sum(organic_ignored)::bigint as organic_ignored,
    sum(duplicates)::bigint as duplicates,
    sum(rejected)::bigint as rejected,
    max(updated_at) as updated_at,
    sum(rate_limited)::bigint as rate_limited
from partner_connection_shards
group by app_id, partner;
