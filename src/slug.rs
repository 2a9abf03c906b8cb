//! Environment slugs and preview hosts (DESIGN §2).
