-- Privacy (issue 16): erasure receipts, and what makes clearing old raw data cheap.
--
-- One row per erasure request (DELETE /v1/apps/{app_id}/users, `users erase`),
-- including repeats that found nothing: proof that a request was carried out. It
-- never holds the identifier itself, only a salted hash of it.
create table erasures (
    app_id uuid not null references apps (id),
    id uuid not null,
    erased_at timestamptz not null,
    -- the identifier's column name: user_id, idfa, idfv, …
    kind text not null,
    -- hex HMAC-SHA256 of the canonical value, keyed with the app's erasure salt.
    value_hash text not null,
    attributions bigint not null,
    events bigint not null,
    deliveries bigint not null,
    outbox bigint not null,
    primary key (app_id, id)
);
create index erasures_newest on erasures (app_id, erased_at desc, id desc);

-- The secret salt of each app's receipt hashes, made at its first erasure. Without
-- it a hash of a guessable value (a user id) could be reversed by trying values.
create table erasure_salts (
    app_id uuid not null references apps (id),
    salt text not null,
    created_at timestamptz not null,
    primary key (app_id)
);

-- privacy.raw_days clears raw_payload, ip and user_agent of old events. This index
-- holds only the rows not cleared yet, so each prune finds its work without scanning
-- the months already cleared, and a row leaves the index once cleared. Like 0020,
-- plain CREATE INDEX on the partitioned table blocks writes while it builds.
create index if not exists postback_events_raw_kept on postback_events (received_at)
    where raw_payload <> '{}'::jsonb or ip is not null or user_agent is not null;
