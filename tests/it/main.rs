//! Integration tests: real processes, real git repositories, real HTTP. One test binary.

mod backups;
mod database;
mod deployments;
mod flows;
mod github;
mod ingress;
mod providers;
mod sentry;
mod support;
mod worker;
