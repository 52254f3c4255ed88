-- See migrations/postgres/0007: attributions per UTC day (YYYY-MM-DD) and source
-- ('' when absent) for the status page chart, maintained with each batch.
create table attribution_days (
    app_id text not null references apps (id),
    day text not null,
    source text not null,
    shard integer not null,
    installs integer not null,
    primary key (app_id, day, source, shard)
) strict;

insert into attribution_days (app_id, day, source, shard, installs)
select app_id, substr(attributed_at, 1, 10), coalesce(source, ''), 0, count(*)
from attributions
group by 1, 2, 3;

-- One writer at a time: a row trigger is cheap here and needs no shards.
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
