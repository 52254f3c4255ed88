-- See migrations/postgres/0006: one letter case per advertising id, then users
-- split by case are merged (the earliest attribution wins).
update postback_events set idfa = upper(idfa) where idfa <> upper(idfa);
update postback_events set idfv = upper(idfv) where idfv <> upper(idfv);
update postback_events set google_aid = lower(google_aid) where google_aid <> lower(google_aid);

update attributions set idfa = upper(idfa) where idfa <> upper(idfa);
update attributions set idfv = upper(idfv) where idfv <> upper(idfv);
update attributions set google_aid = lower(google_aid) where google_aid <> lower(google_aid);

delete from attributions
where exists (
    select 1 from attributions earlier
    where earlier.app_id = attributions.app_id
      and (earlier.attributed_at < attributions.attributed_at
           or (earlier.attributed_at = attributions.attributed_at and earlier.id < attributions.id))
      and (earlier.idfa = attributions.idfa
           or earlier.idfv = attributions.idfv
           or earlier.google_aid = attributions.google_aid)
);
