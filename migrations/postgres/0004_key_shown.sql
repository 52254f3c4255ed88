-- A key is shown once, at creation. The first start creates the `default` app
-- before it prints that app's key; shown_at records that the printout happened,
-- so that a start which finds a key created but never shown (the earlier start
-- failed or was killed in between) can say how to get a new one.
-- Existing keys were shown by the code that created them.
alter table api_keys add column shown boolean not null default true;
