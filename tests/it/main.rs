//! Integration tests: real processes, real git repositories, real HTTP.

mod providers;
mod support;
