//! Guarding against agents' risky calls: the hook protocols of the agents (Claude Code,
//! Cursor), a shell parser and SQL splitter, and the rules that say which calls put which
//! jobs' data at risk. Pure: it decides, it takes no snapshot (the `hook` command does).
//!
//! May import: config, text, error.

mod code;
pub mod hook;
mod packs;
mod paths;
pub mod rules;
mod scripts;
pub mod shell;
pub mod sql;
