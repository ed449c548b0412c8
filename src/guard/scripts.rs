//! Task runners whose commands live in a file of the project: `npm run X` (and pnpm,
//! yarn, bun) reads `package.json`'s scripts, `make X` the Makefile's recipe, `just X` the
//! justfile's. The text each call would run is returned to be checked like a command line;
//! files are read only under the call's cwd.

use std::path::Path;

use super::paths::{base, read_named};

/// The commands a task-runner call would run, from the project's files, or nothing.
pub(crate) fn task_text(words: &[&str], cwd: Option<&Path>) -> Vec<String> {
    let Some(prog) = words.first().map(|w| base(w)) else {
        return Vec::new();
    };
    let args = &words[1..];
    // A dry run, or asking for help, runs nothing.
    if args.iter().any(|a| {
        matches!(
            *a,
            "-n" | "--dry-run" | "--just-print" | "--recon" | "--help" | "-h"
        )
    }) {
        return Vec::new();
    }
    match prog {
        "npm" | "pnpm" | "yarn" | "bun" => package_script(prog, args, cwd),
        "make" | "gmake" => make_recipe(args, cwd),
        "just" => just_recipe(args, cwd),
        _ => Vec::new(),
    }
}

fn package_script(prog: &str, args: &[&str], cwd: Option<&Path>) -> Vec<String> {
    let pos: Vec<&str> = args
        .iter()
        .copied()
        .take_while(|a| *a != "--")
        .filter(|a| !a.starts_with('-'))
        .collect();
    let name = match (prog, pos.as_slice()) {
        (_, ["run" | "run-script", name, ..]) => *name,
        ("npm", [name @ ("test" | "start" | "stop" | "restart"), ..]) => *name,
        ("pnpm" | "yarn", [name, ..]) => *name,
        _ => return Vec::new(),
    };
    let Some(text) = read_named("package.json", cwd) else {
        return Vec::new();
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Vec::new();
    };
    let scripts = &v["scripts"];
    [
        format!("pre{name}"),
        name.to_string(),
        format!("post{name}"),
    ]
    .iter()
    .filter_map(|n| scripts.get(n).and_then(|s| s.as_str()).map(str::to_string))
    .collect()
}

fn make_recipe(args: &[&str], cwd: Option<&Path>) -> Vec<String> {
    let mut dir = cwd.map(Path::to_path_buf);
    let mut file = None;
    let mut targets = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i];
        match a {
            "-C" | "--directory" => {
                dir = args
                    .get(i + 1)
                    .map(|d| super::paths::resolve(d, dir.as_deref()));
                i += 1;
            }
            "-f" | "--file" | "--makefile" => {
                file = args.get(i + 1).map(|f| f.to_string());
                i += 1;
            }
            _ if a.starts_with('-') || a.contains('=') => {}
            _ => targets.push(a),
        }
        i += 1;
    }
    // The file must still lie under the call's cwd.
    let root = cwd.map(Path::to_path_buf);
    let Some(d) = dir.filter(|d| root.as_ref().is_some_and(|r| d.starts_with(r))) else {
        return Vec::new();
    };
    let names: Vec<String> = match file {
        Some(f) => vec![f],
        None => ["GNUmakefile", "makefile", "Makefile"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    let Some(text) = names.iter().find_map(|n| read_named(n, Some(&d))) else {
        return Vec::new();
    };
    let rules = parse_rules(&text, |l| l.starts_with('\t'), |h| !h.contains('='));
    let first = rules.first().map(|(t, _, _)| t.clone());
    let wanted: Vec<String> = if targets.is_empty() {
        first.into_iter().collect()
    } else {
        targets.iter().map(|t| t.to_string()).collect()
    };
    follow(&rules, wanted, |l| {
        l.trim_start_matches(['@', '-', '+']).to_string()
    })
}

fn just_recipe(args: &[&str], cwd: Option<&Path>) -> Vec<String> {
    let Some(text) = ["justfile", "Justfile", ".justfile"]
        .iter()
        .find_map(|n| read_named(n, cwd))
    else {
        return Vec::new();
    };
    let rules = parse_rules(
        &text,
        |l| l.starts_with(' ') || l.starts_with('\t'),
        |h| !h.contains(":=") && !h.starts_with("set ") && !h.starts_with("export "),
    );
    let wanted: Vec<String> = match args.iter().find(|a| !a.starts_with('-')) {
        Some(t) => vec![t.to_string()],
        None => rules
            .first()
            .map(|(t, _, _)| t.clone())
            .into_iter()
            .collect(),
    };
    follow(&rules, wanted, |l| {
        l.trim().trim_start_matches(['@', '-']).to_string()
    })
}

/// `(target, dependencies, recipe lines)` of a Makefile-like text.
type Rule = (String, Vec<String>, Vec<String>);

fn parse_rules(
    text: &str,
    is_body: impl Fn(&str) -> bool,
    is_header: impl Fn(&str) -> bool,
) -> Vec<Rule> {
    let mut rules: Vec<Rule> = Vec::new();
    let mut open = false;
    for line in text.lines() {
        if is_body(line) && !line.trim().is_empty() {
            if open && let Some(r) = rules.last_mut() {
                r.2.push(line.to_string());
            }
            continue;
        }
        open = false;
        let l = line.trim_end();
        if l.is_empty() || l.starts_with('#') || l.starts_with('.') {
            continue;
        }
        if let Some((head, deps)) = l.split_once(':')
            && !deps.starts_with('=')
            && is_header(l)
        {
            let deps: Vec<String> = deps.split_whitespace().map(str::to_string).collect();
            // `just` recipes take parameters after the name.
            if let Some(t) = head.split_whitespace().next() {
                rules.push((t.to_string(), deps, Vec::new()));
                open = true;
            }
        }
    }
    rules
}

/// The recipe lines of `wanted` and of the targets they depend on (at most 32 targets).
fn follow(rules: &[Rule], wanted: Vec<String>, clean: impl Fn(&str) -> String) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut todo = wanted;
    while let Some(t) = todo.pop() {
        if !seen.insert(t.clone()) || seen.len() > 32 {
            continue;
        }
        if let Some((_, deps, body)) = rules.iter().find(|(n, _, _)| *n == t) {
            todo.extend(deps.iter().cloned());
            out.extend(body.iter().map(|l| clean(l.trim_start())));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipes_and_scripts_are_found_under_the_cwd() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("Makefile"),
            "DB := app\n\nbuild:\n\tcargo build\n\nreset: drop\n\t@createdb $(DB)\n\ndrop:\n\t-dropdb $(DB)\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("package.json"),
            r#"{"scripts": {"db:reset": "prisma migrate reset --force", "predb:reset": "echo hi"}}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("justfile"),
            "default:\n    echo hi\n\nwipe env:\n    psql -c 'drop table t'\n",
        )
        .unwrap();
        let cwd = Some(dir.path());
        let mut reset = task_text(&["make", "reset"], cwd);
        reset.sort();
        assert_eq!(reset, ["createdb $(DB)", "dropdb $(DB)"]);
        assert_eq!(task_text(&["make"], cwd), ["cargo build"]);
        assert_eq!(
            task_text(&["npm", "run", "db:reset"], cwd),
            ["echo hi", "prisma migrate reset --force"]
        );
        assert_eq!(task_text(&["yarn", "db:reset"], cwd).len(), 2);
        assert_eq!(
            task_text(&["just", "wipe", "prod"], cwd),
            ["psql -c 'drop table t'"]
        );
        assert!(task_text(&["make", "-C", "/etc", "x"], cwd).is_empty());
        assert!(task_text(&["npm", "install"], cwd).is_empty());
    }

    /// A project that points its task files outside itself, or makes them huge: nothing
    /// outside the cwd is read, and at most 1 MiB of a file is.
    #[test]
    fn task_files_outside_the_cwd_or_oversized_are_not_followed() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(
            outside.path().join("package.json"),
            r#"{"scripts": {"x": "dropdb app"}}"#,
        )
        .unwrap();
        std::fs::write(outside.path().join("Makefile"), "x:\n\tdropdb app\n").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("package.json"),
            dir.path().join("package.json"),
        )
        .unwrap();
        std::os::unix::fs::symlink(outside.path().join("Makefile"), dir.path().join("Makefile"))
            .unwrap();
        let cwd = Some(dir.path());
        assert!(task_text(&["npm", "run", "x"], cwd).is_empty());
        assert!(task_text(&["make", "x"], cwd).is_empty());
        assert!(task_text(&["make", "-C", outside.path().to_str().unwrap(), "x"], cwd).is_empty());
        // 2 MiB of package.json: cut at 1 MiB, not JSON any more, so no script is read here;
        // the classifier then treats the call as risky (rules.rs: files larger than it reads).
        let big = dir.path().join("big");
        std::fs::create_dir(&big).unwrap();
        let mut json = String::from(r#"{"scripts": {"x": "dropdb app"}, "pad": ""#);
        json.push_str(&"x".repeat(2 << 20));
        json.push_str("\"}");
        std::fs::write(big.join("package.json"), json).unwrap();
        assert!(task_text(&["npm", "run", "x"], Some(&big)).is_empty());
    }
}
