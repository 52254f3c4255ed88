-- postback_events grows with every delivery for as long as the server runs. It is
-- now partitioned by month of received_at, so that retention drops whole months
-- (`postback-gateway prune`) instead of deleting rows one by one.
--
-- A unique constraint on a partitioned table must include the partition key, and a
-- partner's retry arrives later than the first delivery, possibly in another month:
-- the dedupe keys therefore move to their own table, dedupe_keys, which keeps the
-- uniqueness and the first event's id. Its rows are kept retention.dedupe_days
-- (well past every partner's retry window) and pruned by received_at.
--
-- attributions.event_id no longer references postback_events: a foreign key to a
-- partitioned table would have to name received_at too, and an attribution outlives
-- the partition of the install that made it.
--
-- This migration rewrites postback_events in place: it takes about as long as
-- copying the table once, and blocks writes meanwhile.

create table dedupe_keys (
    app_id uuid not null references apps (id),
    partner text not null,
    dedupe_key text not null,
    -- the first delivery's event id, answered to every retry.
    event_id uuid not null,
    received_at timestamptz not null,
    primary key (app_id, partner, dedupe_key)
);
create index dedupe_keys_received_at on dedupe_keys (received_at);

insert into dedupe_keys (app_id, partner, dedupe_key, event_id, received_at)
select app_id, partner, dedupe_key, id, received_at from postback_events;

alter table attributions drop constraint if exists attributions_event_id_fkey;

alter table postback_events rename to postback_events_unpartitioned;
alter table postback_events_unpartitioned
    rename constraint postback_events_pkey to postback_events_unpartitioned_pkey;
alter table postback_events_unpartitioned
    drop constraint if exists postback_events_dedupe;

create table postback_events (
    id uuid not null,
    app_id uuid not null references apps (id),
    partner text not null,
    kind text not null check (kind in ('install', 'event')),
    event_name text,
    source text,
    campaign text,
    adgroup text,
    ad text,
    user_id text,
    idfa text,
    idfv text,
    google_aid text,
    android_id text,
    partner_device_id text,
    ip text,
    user_agent text,
    partner_event_id text,
    event_time timestamptz,
    received_at timestamptz not null,
    dedupe_key text not null,
    raw_payload jsonb not null,
    primary key (app_id, id, received_at)
) partition by range (received_at);

-- Rows outside every monthly partition land here rather than failing the insert;
-- the server creates months ahead of time, so this stays empty.
create table postback_events_default partition of postback_events default;

-- Monthly partitions from the oldest stored event to three months ahead.
do $$
declare
    month date := date_trunc('month', coalesce(
        (select min(received_at) from postback_events_unpartitioned), now()) at time zone 'UTC')::date;
    last date := (date_trunc('month', now() at time zone 'UTC') + interval '3 months')::date;
begin
    while month <= last loop
        execute format(
            'create table if not exists %I partition of postback_events for values from (%L) to (%L)',
            'postback_events_' || to_char(month, 'YYYY_MM'),
            month::timestamp at time zone 'UTC',
            (month + interval '1 month')::timestamp at time zone 'UTC');
        month := (month + interval '1 month')::date;
    end loop;
end $$;

insert into postback_events select
    id, app_id, partner, kind, event_name, source, campaign, adgroup, ad, user_id, idfa, idfv,
    google_aid, android_id, partner_device_id, ip, user_agent, partner_event_id, event_time,
    received_at, dedupe_key, raw_payload
from postback_events_unpartitioned;

drop table postback_events_unpartitioned;
