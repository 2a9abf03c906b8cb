//! The policy's decision table.
