//! stagebot: a self-hosted GitHub App that gives every branch and pull request its own live
//! environment. See `docs/architecture.md` for how the parts fit together.

pub mod clock;
pub mod event;
pub mod fake_github;
pub mod github;
pub mod provider;
pub mod store;
pub mod types;
pub mod admin;
pub mod app;
pub mod engine;
pub mod lifecycle;
pub mod metrics;
pub mod policy;
pub mod reporter;
pub mod serve;
pub mod server;
pub mod webhook;
pub mod worker;
pub mod testkit;
pub mod demo;
