//! credproxy: an outbound HTTP proxy that injects credentials so workflows hold no secrets.

pub mod admin;
pub mod app;
pub mod audit;
pub mod catalog;
pub mod config;
pub mod connections;
pub mod credentials;
pub mod dns;
pub mod egress;
pub mod errors;
pub mod explain;
pub mod logging;
pub mod metrics;
pub mod otel;
pub mod ports;
pub mod proxy;
pub mod routing;
pub mod scrub;
pub mod secret;
pub mod server;
pub mod sources;
pub mod store;
pub mod tls;
pub mod tokens;
