//! Integration tests: real processes, real git repositories, real HTTP. One test binary.

mod comments;
mod deployments;
mod flows;
mod frontdoor;
mod github;
mod ingress;
mod pipeline;
mod providers;
mod sandbox;
mod support;
mod worker;
