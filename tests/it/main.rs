//! Integration tests: real processes, real git repositories, real HTTP. One test binary.

mod catchup;
mod deployments;
mod flows;
mod github;
mod ingress;
mod providers;
mod recover;
mod support;
mod worker;
