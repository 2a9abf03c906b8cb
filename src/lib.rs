//! stagebot: a self-hosted GitHub App that gives every branch and pull request its own live
//! environment. See `docs/architecture.md` for how the parts fit together.

pub mod clock;
pub mod command;
pub mod event;
pub mod provider;
pub mod slug;
pub mod types;
