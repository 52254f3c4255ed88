//! Forwarding attributions and events to each app's destinations: the SSRF guard,
//! destination management, and the dispatcher that drains the outbox.

pub mod destinations;
pub mod ssrf;
