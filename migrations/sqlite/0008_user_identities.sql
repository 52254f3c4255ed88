-- See migrations/postgres/0008: every identifier of an attribution, so that first
-- touch and lookups are one primary-key probe per identifier.
create table user_identities (
    app_id text not null references apps (id),
    kind text not null,
    value text not null,
    attribution_id text not null,
    primary key (app_id, kind, value)
) strict, without rowid;

-- Earliest first, so that should two rows share an identifier, the first touch keeps it.
insert or ignore into user_identities (app_id, kind, value, attribution_id)
select app_id, 'user_id', user_id, id from attributions where user_id is not null order by attributed_at, id;
insert or ignore into user_identities (app_id, kind, value, attribution_id)
select app_id, 'idfa', idfa, id from attributions where idfa is not null order by attributed_at, id;
insert or ignore into user_identities (app_id, kind, value, attribution_id)
select app_id, 'idfv', idfv, id from attributions where idfv is not null order by attributed_at, id;
insert or ignore into user_identities (app_id, kind, value, attribution_id)
select app_id, 'google_aid', google_aid, id from attributions where google_aid is not null order by attributed_at, id;
insert or ignore into user_identities (app_id, kind, value, attribution_id)
select app_id, 'android_id', android_id, id from attributions where android_id is not null order by attributed_at, id;
insert or ignore into user_identities (app_id, kind, value, attribution_id)
select app_id, 'partner_device_id', partner_device_id, id from attributions where partner_device_id is not null order by attributed_at, id;

create index user_identities_attribution on user_identities (attribution_id);

drop index if exists attributions_user_id;
drop index if exists attributions_idfa;
drop index if exists attributions_idfv;
drop index if exists attributions_google_aid;
drop index if exists attributions_android_id;
drop index if exists attributions_partner_device_id;

alter table quota_usage add column installs integer not null default 0;
-- See migrations/postgres/0008.
alter table quota_usage add column last_grant integer not null default 0;
