//! helios-proxy: routing table, load balancers, health and circuit-breaker state machines.
//!
//! Not built yet: a later issue fills this crate. It owns no sockets; `helios-bins` pumps
//! bytes and time through it.
