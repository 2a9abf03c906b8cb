//! stagebot: a self-hosted GitHub App that gives every branch and pull request its own live
//! environment. See `docs/architecture.md` for how the parts fit together.

pub mod admin;
pub mod app;
pub mod backup;
pub mod catchup;
pub mod clock;
pub mod command;
pub mod database;
pub mod demo;
pub mod engine;
pub mod event;
pub mod fake_github;
pub mod fake_sentry;
pub mod github;
pub mod lifecycle;
pub mod markdown;
pub mod messages;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod provider;
pub mod proxy;
pub mod recover;
pub mod repo_config;
pub mod reporter;
pub mod sentry;
pub mod serve;
pub mod server;
pub mod services;
pub mod shutdown;
pub mod slug;
pub mod store;
pub mod testkit;
pub mod types;
pub mod webhook;
pub mod worker;
