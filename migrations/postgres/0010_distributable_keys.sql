-- Every primary key and unique constraint of an app-owned table includes app_id,
-- so that the schema can be distributed by app (Citus: app_id as the distribution
-- column, apps and api_keys as reference tables; docs/SCALING.md). attributions
-- was the one table keyed without it.
alter table attributions drop constraint attributions_pkey;
alter table attributions add primary key (app_id, id);
alter table attributions drop constraint attributions_event_id_key;
alter table attributions add constraint attributions_event_id_key unique (app_id, event_id);
