-- See migrations/postgres/0009: events are pruned by month (`postback-gateway
-- prune`). SQLite has no partitions; it deletes the same months by received_at,
-- through this index. An attribution outlives the install event that made it, so
-- attributions.event_id stops referencing postback_events: SQLite cannot drop a
-- foreign key, so the table is rebuilt (with its indexes and triggers).
create index postback_events_received_at on postback_events (received_at);

create table attributions_rebuilt (
    id text primary key,
    app_id text not null references apps (id),
    -- the install that created this attribution (kept after the event is pruned).
    event_id text not null unique,
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
    attributed_at text not null
) strict;

insert into attributions_rebuilt select
    id, app_id, event_id, partner, source, campaign, adgroup, ad, user_id, idfa, idfv,
    google_aid, android_id, partner_device_id, attributed_at
from attributions;

drop table attributions;
alter table attributions_rebuilt rename to attributions;

create index attributions_time
    on attributions (app_id, attributed_at, id, source, campaign, adgroup, ad);
create index attributions_source on attributions (app_id, source, attributed_at);
create index attributions_campaign on attributions (app_id, campaign, attributed_at);
create index attributions_adgroup on attributions (app_id, adgroup, attributed_at);
create index attributions_ad on attributions (app_id, ad, attributed_at);

create trigger attributions_days_insert after insert on attributions
begin
    insert into attribution_days (app_id, day, source, shard, installs)
    values (new.app_id, substr(new.attributed_at, 1, 10), coalesce(new.source, ''), 0, 1)
    on conflict (app_id, day, source, shard) do update set installs = installs + 1;
end;

create trigger attributions_days_delete after delete on attributions
begin
    update attribution_days set installs = installs - 1
    where app_id = old.app_id and day = substr(old.attributed_at, 1, 10)
      and source = coalesce(old.source, '') and shard = 0;
end;
