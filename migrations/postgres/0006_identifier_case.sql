-- Advertising ids are UUIDs whose letter case means nothing, and partners differ
-- (Kochava sends AAAA1111-…, Tune may send aaaa1111-… for one device). They are
-- now stored in one case: IDFA and IDFV upper case, Google advertising ids lower
-- case (partners.md §1). Rewrite what earlier versions stored as sent, then merge
-- users that were split by case: the earliest attribution wins, later ones go
-- (their installs stay in postback_events).
update postback_events set idfa = upper(idfa) where idfa <> upper(idfa);
update postback_events set idfv = upper(idfv) where idfv <> upper(idfv);
update postback_events set google_aid = lower(google_aid) where google_aid <> lower(google_aid);

update attributions set idfa = upper(idfa) where idfa <> upper(idfa);
update attributions set idfv = upper(idfv) where idfv <> upper(idfv);
update attributions set google_aid = lower(google_aid) where google_aid <> lower(google_aid);

delete from attributions later
using attributions earlier
where later.app_id = earlier.app_id
  and (later.attributed_at, later.id) > (earlier.attributed_at, earlier.id)
  and (later.idfa = earlier.idfa
       or later.idfv = earlier.idfv
       or later.google_aid = earlier.google_aid);
