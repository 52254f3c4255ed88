-- See migrations/postgres/0011: the delivery log and the unauthenticated log.
create table deliveries (
    app_id text not null references apps (id),
    id text not null,
    received_at text not null,
    partner text not null,
    method text not null,
    status integer not null,
    verdict text not null check (verdict in
        ('accepted', 'duplicate', 'organic', 'invalid', 'rate_limited', 'unavailable')),
    reason text not null,
    event_id text,
    request_id text not null,
    segments text check (segments is null or json_valid(segments)),
    identifiers text check (identifiers is null or json_valid(identifiers)),
    payload text not null check (json_valid(payload)),
    primary key (app_id, id)
) strict;
create index deliveries_newest on deliveries (app_id, partner, received_at desc, id desc);
create index deliveries_request on deliveries (app_id, request_id);

create table unauthenticated_deliveries (
    id text primary key,
    received_at text not null,
    partner text not null,
    method text not null,
    status integer not null,
    reason text not null,
    key_prefix text,
    request_id text not null
) strict;
