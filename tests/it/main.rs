//! Integration tests: real processes, real git repositories, real HTTP. One test binary.

mod flows;
mod github;
mod ingress;
mod providers;
mod sandbox;
mod support;
