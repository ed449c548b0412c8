//! Paths a call names: resolved against its cwd (and `$VAR`s set earlier in the same call
//! or in the environment), matched against the volume jobs' paths and PostgreSQL data
//! directories, and the only files the hook reads (bounded, under the cwd).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// The most of a file a call names that the hook reads.
const READ_MAX: u64 = 1 << 20;

/// A program's file name (`/usr/bin/psql` -> `psql`).
pub(crate) fn base(w: &str) -> &str {
    w.rsplit('/').next().unwrap_or(w)
}

/// Shell variables known at a point of a command line.
pub(crate) type Vars = BTreeMap<String, String>;

/// `$NAME` and `${NAME}` replaced by their value: set earlier in the same command line, or
/// in the hook's environment (the agent's, which the command inherits). Unknown names stay.
pub(crate) fn expand(word: &str, vars: &Vars) -> String {
    if !word.contains('$') {
        return word.to_string();
    }
    let b: Vec<char> = word.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == '$' && i + 1 < b.len() {
            let (name, next) = if b[i + 1] == '{' {
                let end = b[i + 2..].iter().position(|c| *c == '}').map(|k| i + 2 + k);
                match end {
                    Some(e) => (b[i + 2..e].iter().collect::<String>(), e + 1),
                    None => (String::new(), i + 1),
                }
            } else {
                let mut j = i + 1;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == '_') {
                    j += 1;
                }
                (b[i + 1..j].iter().collect::<String>(), j)
            };
            // `${NAME:?}`, `${NAME:-default}`: the name, then what to do when it is unset.
            let ident_len = name
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(name.len());
            let (ident, modifier) = name.split_at(ident_len);
            let simple = !ident.is_empty() && !ident.starts_with(|c: char| c.is_ascii_digit());
            if simple {
                let value = vars
                    .get(ident)
                    .cloned()
                    .or_else(|| std::env::var(ident).ok())
                    .or_else(|| {
                        modifier
                            .strip_prefix(":-")
                            .or_else(|| modifier.strip_prefix('-'))
                            .map(str::to_string)
                    });
                if let Some(v) = value {
                    out.push_str(&v);
                    i = next;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

pub(crate) fn resolve(p: &str, cwd: Option<&Path>) -> PathBuf {
    // A glob removes everything below its literal prefix.
    let literal = match p.find(['*', '?', '[']) {
        Some(i) => &p[..i],
        None => p,
    };
    let literal = if literal.is_empty() { "." } else { literal };
    let path = if let Some(rest) = literal.strip_prefix("~/") {
        std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(rest))
            .unwrap_or_else(|| PathBuf::from(literal))
    } else {
        PathBuf::from(literal)
    };
    let abs = if path.is_absolute() {
        path
    } else {
        cwd.map(|c| c.join(&path)).unwrap_or(path)
    };
    normalize(&abs)
}

/// Remove `.` and `..` without touching the filesystem.
pub(crate) fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The volume paths a target touches: at, above or inside one (`inside` also counts paths
/// below a volume). A glob (`/srv/upl*`) touches every volume its literal prefix starts.
pub(crate) fn touched_volumes(
    target: &str,
    cwd: Option<&Path>,
    volumes: &[PathBuf],
    inside: bool,
) -> Vec<PathBuf> {
    let t = resolve(target, cwd);
    let glob = target.contains(['*', '?', '[']);
    let prefix = if glob && !target.ends_with('/') {
        // `upl*` keeps its partial last component: match by text.
        let lit = &target[..target.find(['*', '?', '[']).unwrap_or(target.len())];
        let partial = !lit.is_empty() && !lit.ends_with('/');
        partial.then(|| t.to_string_lossy().into_owned())
    } else {
        None
    };
    volumes
        .iter()
        .filter(|v| {
            v.starts_with(&t)
                || (inside && t.starts_with(v))
                || prefix
                    .as_deref()
                    .is_some_and(|p| v.to_string_lossy().starts_with(p))
        })
        // What of the volume is touched: the part inside it, or all of it.
        .map(|v| {
            if t.starts_with(v) {
                t.clone()
            } else {
                v.clone()
            }
        })
        .collect()
}

/// Whether a target is (or lies in) a PostgreSQL data directory: a `PG_VERSION` file in
/// it or in a directory above it (within three levels), or a distribution's default place.
pub(crate) fn in_pg_data_dir(target: &str, cwd: Option<&Path>) -> bool {
    let t = resolve(target, cwd);
    let s = t.to_string_lossy();
    if [
        "/var/lib/postgresql",
        "/var/lib/pgsql",
        "/usr/local/pgsql/data",
    ]
    .iter()
    .any(|d| s == *d || s.starts_with(&format!("{d}/")))
    {
        return true;
    }
    t.ancestors()
        .take(4)
        .any(|d| d.parent().is_some() && d.join("PG_VERSION").is_file())
}

thread_local! {
    /// Files the call being checked writes before it runs them (`cat > x.sql <<EOF ...
    /// EOF && psql -f x.sql`): their text as the call gives it, by absolute path.
    static WRITTEN: std::cell::RefCell<BTreeMap<PathBuf, String>> =
        const { std::cell::RefCell::new(BTreeMap::new()) };
    /// Files the call names that were larger than the hook reads: it cannot judge them.
    static TOO_LARGE: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The files the call being checked names that were cut at 1 MiB (the hook fails closed
/// on them: what it did not read may be what destroys data).
pub(crate) fn too_large() -> Vec<String> {
    TOO_LARGE.with(|t| t.borrow().clone())
}

/// Forget the files an earlier call wrote (a new call is being checked).
pub(crate) fn forget_written() {
    WRITTEN.with(|w| w.borrow_mut().clear());
    TOO_LARGE.with(|t| t.borrow_mut().clear());
}

/// Remember that the call writes `text` to `name` (at most 1 MiB of it kept).
pub(crate) fn note_written(name: &str, cwd: Option<&Path>, text: &str) {
    let path = resolve(name, cwd);
    let kept: String = text.chars().take(READ_MAX as usize).collect();
    WRITTEN.with(|w| {
        let mut w = w.borrow_mut();
        if w.len() < 64 {
            w.insert(path, kept);
        }
    });
}

/// The text of a file a call names (`psql -f reset.sql`, `bash reset.sh`): what the same
/// call wrote to it earlier, else the file, read only when it lies under the call's
/// working directory (after resolving symlinks), is a regular file, and holds at most
/// 1 MiB: the hook reads no other file.
pub(crate) fn read_named(name: &str, cwd: Option<&Path>) -> Option<String> {
    use std::io::Read;
    if name.is_empty() || name.starts_with('-') || name.contains(['$', '*', '?']) {
        return None;
    }
    if let Some(text) = WRITTEN.with(|w| w.borrow().get(&resolve(name, cwd)).cloned()) {
        return Some(text);
    }
    let cwd = cwd?;
    let path = resolve(name, Some(cwd));
    let real = std::fs::canonicalize(&path).ok()?;
    let root = std::fs::canonicalize(cwd).ok()?;
    if !real.starts_with(&root) {
        return None;
    }
    let f = std::fs::File::open(&real).ok()?;
    let meta = f.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    if meta.len() > READ_MAX {
        TOO_LARGE.with(|t| t.borrow_mut().push(name.to_string()));
    }
    let mut buf = Vec::new();
    f.take(READ_MAX).read_to_end(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_expand_from_the_line_then_the_environment() {
        let mut vars = Vars::new();
        vars.insert("DATA_DIR".into(), "/srv/data".into());
        assert_eq!(expand("$DATA_DIR/x", &vars), "/srv/data/x");
        assert_eq!(expand("${DATA_DIR}", &vars), "/srv/data");
        assert_eq!(
            expand("$NOT_SET_ANYWHERE_42/x", &vars),
            "$NOT_SET_ANYWHERE_42/x"
        );
        assert_eq!(expand("cost $5", &vars), "cost $5");
        assert_eq!(expand("${unterminated", &vars), "${unterminated");
        assert_eq!(expand("${DATA_DIR:?}/x", &vars), "/srv/data/x");
        assert_eq!(expand("${NOT_SET_ANYWHERE_42:-/tmp}/x", &vars), "/tmp/x");
    }

    #[test]
    fn globs_touch_the_volumes_their_prefix_starts() {
        let vols = vec![PathBuf::from("/srv/uploads")];
        assert_eq!(touched_volumes("/srv/upl*", None, &vols, true).len(), 1);
        assert_eq!(touched_volumes("/srv/*", None, &vols, true).len(), 1);
        assert!(touched_volumes("/srv/other*", None, &vols, true).is_empty());
        assert!(touched_volumes("/srv/uploads/x", None, &vols, false).is_empty());
        assert_eq!(
            touched_volumes("/srv/uploads/x", None, &vols, true).len(),
            1
        );
    }
}
