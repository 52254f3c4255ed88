-- The delivery log: one row per postback request that authenticated to an app,
-- whatever was answered, with the rule that decided it in words, so that an
-- operator can answer "what did we do with the 40 postbacks Kochava sent?".
-- Written by the batch writer with the batch (no commit of its own) and bounded by
-- deliveries.keep_per_partner and deliveries.keep_days.
create table deliveries (
    app_id uuid not null references apps (id),
    -- time-ordered (UUID v7): newest first is (received_at, id) descending.
    id uuid not null,
    received_at timestamptz not null,
    partner text not null,
    method text not null,
    -- the HTTP status answered.
    status smallint not null,
    verdict text not null check (verdict in
        ('accepted', 'duplicate', 'organic', 'invalid', 'rate_limited', 'unavailable')),
    reason text not null,
    event_id uuid,
    request_id text not null,
    -- {"source": …, "campaign": …, "adgroup": …, "ad": …} and the identifiers, as
    -- mapped; null when the payload was not read that far.
    segments jsonb,
    identifiers jsonb,
    -- the request's fields without the API key, cut to deliveries.payload_max_bytes.
    payload jsonb not null,
    primary key (app_id, id)
);
create index deliveries_newest on deliveries (app_id, partner, received_at desc, id desc);
create index deliveries_request on deliveries (app_id, request_id);

-- Requests whose key was missing or unknown belong to no app: a short global log,
-- with at most the display prefix of a key in our format.
create table unauthenticated_deliveries (
    id uuid primary key,
    received_at timestamptz not null,
    partner text not null,
    method text not null,
    status smallint not null,
    reason text not null,
    key_prefix text,
    request_id text not null
);
