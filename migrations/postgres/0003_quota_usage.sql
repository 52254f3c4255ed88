-- Postback requests counted against each app's hourly quota, one row per app and
-- clock hour, written with the writer's batches so that a restart does not hand an
-- app a fresh allowance in the middle of an hour.
create table quota_usage (
    app_id uuid not null references apps (id),
    window_start timestamptz not null,
    requests bigint not null default 0,
    primary key (app_id, window_start)
);

create index quota_usage_window on quota_usage (window_start);
