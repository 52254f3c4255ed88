-- Postbacks answered 429 (over the quota), counted per (app, partner): partners
-- such as Adjust, Singular and AppsFlyer retry on 5xx only, so such an install is
-- lost for good, and the status page must show that it happened.
alter table partner_connections add column rate_limited bigint not null default 0;
