-- The tables every batch writes no longer reference apps by foreign key. Each row
-- written checked its app with a lookup that also took a KEY SHARE lock on the app's
-- row: six per postback, and every concurrent batch of an app sharing that lock (a
-- MultiXact per app row under load). Measured with scripts/bench-profile: 231,576
-- such checks in a 10 s load, 1.6 % of all statement time, on top of the locking.
-- The check protects nothing at run time: apps are never deleted (no command or route
-- deletes one), and every row is written for an app whose key just authenticated.
-- Tables written by operators (api_keys, destinations, quota_usage, erasures, …) and
-- the outbox's reference to its destination keep theirs.
alter table postback_events drop constraint if exists postback_events_app_id_fkey1;
alter table postback_events drop constraint if exists postback_events_app_id_fkey;
alter table dedupe_keys drop constraint if exists dedupe_keys_app_id_fkey;
alter table user_identities drop constraint if exists user_identities_app_id_fkey;
alter table attributions drop constraint if exists attributions_app_id_fkey;
alter table deliveries drop constraint if exists deliveries_app_id_fkey;
alter table partner_connection_shards drop constraint if exists partner_connections_app_id_fkey;
alter table attribution_days drop constraint if exists attribution_days_app_id_fkey;
alter table outbox drop constraint if exists outbox_app_id_fkey;
