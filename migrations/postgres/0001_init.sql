-- Initial schema. Table and column names are part of the contract (SPEC §3):
-- operators query them directly, so keep them identical to migrations/sqlite.

-- An app owns keys, events and attributions; the first start creates "default".
create table apps (
    id uuid primary key,
    name text not null,
    -- standard apps have an hourly postback quota, enterprise apps none.
    tier text not null check (tier in ('standard', 'enterprise')),
    created_at timestamptz not null
);

-- Only the SHA-256 (hex) of a key is stored, so a leaked database leaks no key.
-- A rotated-out key keeps working until expires_at; null means no expiry.
create table api_keys (
    id uuid primary key,
    app_id uuid not null references apps (id),
    -- unique: authentication looks a key up by its hash alone.
    key_hash text not null unique check (key_hash ~ '^[0-9a-f]{64}$'),
    -- the first characters of the key, shown in listings to tell keys apart.
    prefix text not null,
    created_at timestamptz not null,
    expires_at timestamptz
);

create index api_keys_app_id on api_keys (app_id);

-- One row per accepted delivery; id is the event_id returned to the partner.
-- The unique dedupe key turns a partner's retry into a Duplicate, not a second row.
create table postback_events (
    id uuid primary key,
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
    -- as sent by the partner; text because partners send what they have.
    ip text,
    user_agent text,
    partner_event_id text,
    event_time timestamptz,
    received_at timestamptz not null,
    dedupe_key text not null,
    -- the request's fields without the API key, for audits and re-processing.
    raw_payload jsonb not null,
    constraint postback_events_dedupe unique (app_id, partner, dedupe_key)
);

-- One row per (app, user): the user's FIRST attributed install (first touch wins).
-- Later installs of the same user stay in postback_events only.
create table attributions (
    id uuid primary key,
    app_id uuid not null references apps (id),
    -- the install that created this attribution.
    event_id uuid not null unique references postback_events (id),
    partner text not null,
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
    -- the install's received_at.
    attributed_at timestamptz not null
);

-- Matching a new install to a known user, and the lookup route, probe one
-- identifier at a time; absent identifiers are never matched, so leave them out.
create index attributions_user_id on attributions (app_id, user_id) where user_id is not null;
create index attributions_idfa on attributions (app_id, idfa) where idfa is not null;
create index attributions_idfv on attributions (app_id, idfv) where idfv is not null;
create index attributions_google_aid on attributions (app_id, google_aid) where google_aid is not null;
create index attributions_android_id on attributions (app_id, android_id) where android_id is not null;
create index attributions_partner_device_id on attributions (app_id, partner_device_id)
    where partner_device_id is not null;

-- The users route lists newest first with a (attributed_at, id) cursor; the segment
-- filters and the summary narrow by one dimension over a time range.
create index attributions_newest on attributions (app_id, attributed_at desc, id desc);
create index attributions_source on attributions (app_id, source, attributed_at);
create index attributions_campaign on attributions (app_id, campaign, attributed_at);
create index attributions_adgroup on attributions (app_id, adgroup, attributed_at);
create index attributions_ad on attributions (app_id, ad, attributed_at);

-- Per (app, partner) health for the status page, kept as running counters so the
-- page never scans postback_events. A row appears the first time a partner is heard.
create table partner_connections (
    app_id uuid not null references apps (id),
    partner text not null,
    -- connected from the first accepted attributed install on.
    status text not null default 'not_connected' check (status in ('not_connected', 'connected')),
    last_success_at timestamptz,
    installs bigint not null default 0,
    events bigint not null default 0,
    organic_ignored bigint not null default 0,
    duplicates bigint not null default 0,
    rejected bigint not null default 0,
    updated_at timestamptz not null,
    primary key (app_id, partner)
);
