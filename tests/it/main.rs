//! Integration tests: real processes, real git repositories, real HTTP. One test binary.

mod backups;
mod catchup;
mod chaos;
mod comments;
mod database;
mod deployments;
mod flows;
mod frontdoor;
mod github;
mod ingress;
mod pipeline;
mod providers;
mod recover;
mod sandbox;
mod sentry;
mod support;
mod worker;
