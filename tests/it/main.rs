//! Integration tests: real processes, real git repositories, real HTTP.

mod flows;
mod providers;
mod support;
