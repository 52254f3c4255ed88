//! Forwarding attributions and events to each app's destinations: the SSRF guard,
//! destination management, and the dispatcher that drains the outbox.

pub mod client;
pub mod destinations;
pub mod dispatcher;
pub mod replay;
pub mod retry;
pub mod sign;
pub mod ssrf;
