//! Plugins written in other languages (placeholder until the polyglot plugins land).
