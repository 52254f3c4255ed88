-- Postback requests counted against each app's hourly quota, one row per app and
-- clock hour (see migrations/postgres/0003), so a restart does not reset the hour.
create table quota_usage (
    app_id text not null references apps (id),
    window_start text not null,
    requests integer not null default 0,
    primary key (app_id, window_start)
) strict;

create index quota_usage_window on quota_usage (window_start);
