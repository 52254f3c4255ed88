-- See migrations/postgres/0020: stale detection reads, per (app, partner), the
-- newest accepted postback and the gaps between recent ones. The unique
-- (app_id, partner, dedupe_key) index finds a partner's rows but not in time order;
-- this one gives them in time order, so both are index-only range reads.
create index if not exists postback_events_partner_received
    on postback_events (app_id, partner, received_at);
