-- The write path numbers the attributions it inserts itself (one counter update
-- per batch, in the insert), instead of this trigger's counter update and second
-- write of each new row. The trigger stays for any other writer that leaves
-- feed_seq out.
drop trigger attributions_feed_seq;

create trigger attributions_feed_seq after insert on attributions
when new.feed_seq is null
begin
    update attribution_feed_seq set last = last + 1 where id = 1;
    update attributions set feed_seq = (select last from attribution_feed_seq where id = 1)
    where rowid = new.rowid;
end;
