-- See migrations/postgres/0012: forwarding destinations and the transactional outbox.
create table destinations (
    id text primary key,
    app_id text not null references apps (id),
    url text not null,
    what text not null check (what in ('attributions', 'events', 'all')),
    secret text not null,
    enabled integer not null default 1,
    disabled_reason text,
    created_at text not null,
    updated_at text not null,
    last_success_at text,
    failing_since text
) strict;
create index destinations_app on destinations (app_id);

create table outbox (
    id text primary key,
    destination_id text not null references destinations (id) on delete cascade,
    app_id text not null references apps (id),
    type text not null check (type in ('attribution.created', 'event.accepted')),
    event_id text not null,
    attribution_id text,
    payload text not null check (json_valid(payload)),
    status text not null default 'pending' check (status in ('pending', 'delivered', 'dead')),
    attempts integer not null default 0,
    created_at text not null,
    next_attempt_at text not null,
    last_attempt_at text,
    last_status integer,
    last_error text,
    delivered_at text
) strict;
create index outbox_due on outbox (next_attempt_at) where status = 'pending';
create index outbox_destination on outbox (destination_id, status, created_at);
create index outbox_event on outbox (app_id, event_id);
