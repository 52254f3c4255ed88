-- Forwarding (issue 15): where an app's attributions and events are sent, and the
-- transactional outbox of messages to send. The batch transaction that stores an
-- attribution or event writes one outbox row per matching enabled destination, so
-- nothing is forwarded that was not committed and nothing committed is skipped.
create table destinations (
    id uuid not null,
    app_id uuid not null references apps (id),
    url text not null,
    -- attributions: one message per new first-touch attribution; events: one per
    -- accepted delivery (installs included); all: both.
    what text not null check (what in ('attributions', 'events', 'all')),
    -- the Standard Webhooks signing secret (whsec_ + base64). HMAC needs the secret
    -- itself, so it cannot be stored hashed: it is shown once, then only used to sign.
    secret text not null,
    enabled boolean not null default true,
    -- why it was disabled: 'operator', or 'failing' when disabled automatically.
    disabled_reason text,
    created_at timestamptz not null,
    updated_at timestamptz not null,
    last_success_at timestamptz,
    -- the first failure since the last success; null while healthy.
    failing_since timestamptz,
    -- app_id first in every key: the schema stays distributable by app (SCALING.md).
    primary key (app_id, id)
);
-- the admin API and the CLI find a destination by its id alone.
create index destinations_id on destinations (id);

create table outbox (
    -- the Standard Webhooks message id (webhook-id: msg_ + the uuid, simple form):
    -- the same on every retry and on replay.
    id uuid not null,
    destination_id uuid not null,
    app_id uuid not null references apps (id),
    type text not null check (type in ('attribution.created', 'event.accepted')),
    event_id uuid not null,
    attribution_id uuid,
    -- the JSON document POSTed, frozen at commit.
    payload jsonb not null,
    status text not null default 'pending' check (status in ('pending', 'delivered', 'dead')),
    attempts integer not null default 0,
    created_at timestamptz not null,
    -- when a pending message is next due; a claimed message is leased by moving
    -- this past the attempt's timeout, so a node that dies mid-attempt only delays it.
    next_attempt_at timestamptz not null,
    last_attempt_at timestamptz,
    -- the receiver's HTTP status of the last attempt; null for a timeout or a
    -- connection error (last_error says which).
    last_status smallint,
    last_error text,
    delivered_at timestamptz,
    primary key (app_id, id),
    foreign key (app_id, destination_id) references destinations (app_id, id) on delete cascade
);
create index outbox_due on outbox (next_attempt_at) where status = 'pending';
create index outbox_destination on outbox (app_id, destination_id, status, created_at);
create index outbox_event on outbox (app_id, event_id);
