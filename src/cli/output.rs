//! Output on stdout: one JSON document, or lines of text; a closed pipe is not an error.

use std::io::Write;

/// Print a JSON document on stdout (a closed pipe is not an error).
pub(crate) fn print_json(v: &impl serde::Serialize) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer_pretty(&mut out, v);
    let _ = writeln!(out);
}

/// Print a line on stdout (a closed pipe is not an error).
pub(crate) fn print_line(s: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{s}");
}
