-- See migrations/postgres/0013: the pull feed pages through an app's attributions
-- in commit order. SQLite has one writer at a time, so commit order is write
-- order; but rowids are reused once the newest row is deleted (erasure deletes
-- attributions), so the order comes from a counter that only ever grows.
create table attribution_feed_seq (
    id integer primary key check (id = 1),
    -- the last feed_seq handed out.
    last integer not null
) strict;

-- Set by the trigger below, inside the inserting transaction: null only for the
-- moment between the insert and its trigger.
alter table attributions add column feed_seq integer;

-- The rows already here were all committed: number them in (attributed_at, id) order.
update attributions set feed_seq = n.seq
from (select rowid as r, row_number() over (order by attributed_at, id) as seq
      from attributions) as n
where attributions.rowid = n.r;

insert into attribution_feed_seq (id, last)
select 1, coalesce(max(feed_seq), 0) from attributions;

-- Every writer of attributions gets its number here, so ingest needs no change.
create trigger attributions_feed_seq after insert on attributions
begin
    update attribution_feed_seq set last = last + 1 where id = 1;
    update attributions set feed_seq = (select last from attribution_feed_seq where id = 1)
    where rowid = new.rowid;
end;

create unique index attributions_feed on attributions (app_id, feed_seq);
