-- See migrations/postgres/0014: erasure receipts (never the identifier, only a
-- salted hash of it), each app's salt, and an index of the events whose raw
-- payload, IP address and user agent privacy.raw_days has not cleared yet.
create table erasures (
    app_id text not null references apps (id),
    id text not null,
    erased_at text not null,
    kind text not null,
    value_hash text not null,
    attributions integer not null,
    events integer not null,
    deliveries integer not null,
    outbox integer not null,
    primary key (app_id, id)
) strict;
create index erasures_newest on erasures (app_id, erased_at desc, id desc);

create table erasure_salts (
    app_id text not null references apps (id),
    salt text not null,
    created_at text not null,
    primary key (app_id)
) strict;

create index postback_events_raw_kept on postback_events (received_at)
    where raw_payload <> '{}' or ip is not null or user_agent is not null;
