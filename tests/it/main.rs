//! Integration tests: real processes, real git repositories, real HTTP. One test binary.

mod archive;
mod backups;
mod browser;
mod catchup;
mod chaos;
mod comments;
mod dashboard;
mod database;
mod deployments;
mod edge;
mod flows;
mod frontdoor;
mod github;
mod harness;
mod ingress;
mod manifests;
mod modules;
mod pipeline;
mod providers;
mod recover;
mod sandbox;
mod sentry;
mod setup;
mod states;
mod support;
mod worker;
