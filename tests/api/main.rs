//! API tests: the real server over HTTP on 127.0.0.1:0, each test on SQLite and on
//! PostgreSQL with a fresh database.

mod helpers;

mod admin;
mod check_url;
mod cli;
mod connections;
mod crash;
mod deliveries;
mod deploy;
mod destinations;
mod dry_run;
mod erasure;
mod failover;
mod feed;
mod fleet;
mod forwarding;
mod health;
mod hostile;
mod keys;
mod logs;
mod operator;
mod outage;
mod page;
mod partners;
mod postbacks;
mod quota;
mod receiver;
mod schema;
mod secrets;
mod shutdown;
mod stale;
mod tls;
