//! Integration tests: real processes, real git repositories, real HTTP.

mod flows;
mod ingress;
mod providers;
mod support;
