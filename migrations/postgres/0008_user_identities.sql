-- First touch decided by unique constraints instead of a per-app lock and a probe.
-- Every identifier of an attribution (the user it belongs to) is a row here; an
-- install is a new user exactly when it can claim every one of its identifiers
-- (INSERT … ON CONFLICT DO NOTHING). Concurrent batches, in one process or many,
-- wait only on the identifiers they share, not on the app: two installs of one new
-- user still give one attribution, because the second one's insert waits for the
-- first commit and then finds the identifier taken.
create table user_identities (
    app_id uuid not null references apps (id),
    -- the identifier's column name in attributions: user_id, idfa, idfv, …
    kind text not null,
    value text not null,
    attribution_id uuid not null,
    primary key (app_id, kind, value)
);

-- The user of each attribution already stored: earliest first, so that should two
-- rows share an identifier, the first touch keeps it.
insert into user_identities (app_id, kind, value, attribution_id)
select a.app_id, i.kind, i.value, a.id
from attributions a
cross join lateral (values ('user_id', a.user_id), ('idfa', a.idfa), ('idfv', a.idfv),
    ('google_aid', a.google_aid), ('android_id', a.android_id),
    ('partner_device_id', a.partner_device_id)) as i(kind, value)
where i.value is not null
order by a.attributed_at, a.id
on conflict do nothing;

create index user_identities_attribution on user_identities (attribution_id);

-- Lookups by identifier now go through user_identities, so the six per-identifier
-- indexes on attributions no longer earn what every insert pays for them.
drop index if exists attributions_user_id;
drop index if exists attributions_idfa;
drop index if exists attributions_idfv;
drop index if exists attributions_google_aid;
drop index if exists attributions_android_id;
drop index if exists attributions_partner_device_id;

-- The hourly quota counts attributed installs (SPEC §2); requests keep their own,
-- more generous limit in the same row.
alter table quota_usage add column installs bigint not null default 0;
-- How many installs the last batch to touch this row was granted: written in the
-- same UPDATE that adds them (where the old count is still at hand), read back
-- through RETURNING. The grant is exact across processes because the row is locked
-- from that update to the batch's commit.
alter table quota_usage add column last_grant bigint not null default 0;
