//! Ferrite's end-to-end tests, in one binary (one build of the shared support code instead of
//! one per file): each module below drives real Postgres clusters, real servers and, for the web
//! apps, headless Chromium. Run one area with `cargo nextest run -p ferrite --test e2e <module>::`.

mod common;

mod abuse;
mod audit;
mod auth;
mod cdn;
mod checksums;
mod client;
mod client_convergence;
mod cluster;
mod dev_command;
mod disk_full;
mod electric_client;
mod examples;
mod http_protocol;
mod include_trees;
mod lifecycle;
mod long_transactions;
mod membership_rules;
mod presence;
mod property_sync;
mod readme;
mod relational_property;
mod relational_shapes;
mod request_checks;
mod restarts;
mod security;
mod slow_clients;
mod sync_correctness;
mod tidy;
mod time_windows;
mod tls;
mod types;
mod watch;
mod web_agents;
mod web_editor;
mod web_leads;
mod web_react;
mod write_path;
