//! SQL as it travels in a command line: split into statements (comments, quotes, dollar
//! quotes), and the statements that destroy data named.

/// SQL statements that destroy data, each as a short description.
pub(crate) fn risky_sql(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    // Code in `DO $$ ... $$` blocks (and function bodies) runs too: its statements and the
    // statements it builds from string literals (`EXECUTE 'DROP TABLE ' || r.tablename`).
    for body in dollar_bodies(sql) {
        out.extend(risky_sql(&body));
        for lit in quoted(&body) {
            out.extend(risky_sql(&lit));
        }
    }
    for stmt in split_sql(sql) {
        let words: Vec<String> = sql_words(&stmt);
        let w: Vec<&str> = words.iter().map(String::as_str).collect();
        let has = |k: &str| w.contains(&k);
        let first = w.first().copied().unwrap_or("");
        // WITH ... DELETE/UPDATE: look at the main verb.
        let verb = if first == "WITH" {
            w.iter()
                .copied()
                .find(|x| ["DELETE", "UPDATE", "DROP", "TRUNCATE"].contains(x))
                .unwrap_or("")
        } else {
            first
        };
        let shown: String = stmt.split_whitespace().collect::<Vec<_>>().join(" ");
        let shown: String = shown.chars().take(120).collect();
        match verb {
            "DROP" => out.push(format!("SQL DROP: {shown}")),
            "TRUNCATE" => out.push(format!("SQL TRUNCATE: {shown}")),
            "DELETE" if !has("WHERE") || where_always_true(&w) => {
                out.push(format!("SQL DELETE without WHERE: {shown}"))
            }
            "UPDATE" if !has("WHERE") || where_always_true(&w) => {
                out.push(format!("SQL UPDATE without WHERE: {shown}"))
            }
            "ALTER" if has("DROP") => out.push(format!("SQL ALTER ... DROP: {shown}")),
            _ => {}
        }
    }
    out
}

/// The texts between `$tag$` pairs (outermost only).
fn dollar_bodies(sql: &str) -> Vec<String> {
    let b: Vec<char> = sql.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == '$' {
            let mut j = i + 1;
            while j < b.len() && (b[j].is_alphanumeric() || b[j] == '_') {
                j += 1;
            }
            let tag_is_param = j > i + 1 && b[i + 1..j].iter().all(|c| c.is_ascii_digit());
            if j < b.len() && b[j] == '$' && !tag_is_param {
                let tag = &b[i..=j];
                if let Some(k) = b[j + 1..].windows(tag.len()).position(|w| w == tag) {
                    out.push(b[j + 1..j + 1 + k].iter().collect());
                    i = j + 1 + k + tag.len();
                    continue;
                }
                break;
            }
        }
        i += 1;
    }
    out
}

/// The contents of `'...'` literals (`''` is a quote inside one).
pub(crate) fn quoted(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match (&mut cur, c) {
            (None, '\'') => cur = Some(String::new()),
            (Some(lit), '\'') => {
                if chars.peek() == Some(&'\'') {
                    lit.push('\'');
                    chars.next();
                } else {
                    out.push(cur.take().unwrap_or_default());
                }
            }
            (Some(lit), c) => lit.push(c),
            (None, _) => {}
        }
    }
    out
}

fn where_always_true(w: &[&str]) -> bool {
    w.iter().position(|x| *x == "WHERE").is_some_and(|i| {
        let rest = &w[i + 1..];
        rest.first() == Some(&"TRUE") && rest.len() == 1
            || rest.len() >= 3 && rest[0] == rest[2] && rest[1] == "="
    })
}

/// Statements, split on `;` outside quotes, dollar quotes and comments.
fn split_sql(sql: &str) -> Vec<String> {
    let b: Vec<char> = sql.chars().collect();
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == '-' && b.get(i + 1) == Some(&'-') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if c == '/' && b.get(i + 1) == Some(&'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == '*' && b[i + 1] == '/') {
                i += 1;
            }
            i += 2;
            // A comment separates words: `DROP/**/TABLE` is `DROP TABLE`.
            cur.push(' ');
            continue;
        }
        if c == '\'' || c == '"' {
            // A literal stands as one word of its letters and digits, so `'a'='a'`
            // still reads as a comparison of two equal values.
            cur.push_str(" lit_");
            i += 1;
            while i < b.len() && b[i] != c {
                if b[i].is_alphanumeric() || b[i] == '_' {
                    cur.push(b[i]);
                }
                i += 1;
            }
            i += 1;
            cur.push(' ');
            continue;
        }
        if c == '\\' && (i == 0 || b[i - 1] == '\n') {
            // A psql meta-command (`\set`, `\c db`) runs to the end of its line and ends
            // the statement before it.
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
            out.push(std::mem::take(&mut cur));
            continue;
        }
        if c == '$' {
            // $tag$ ... $tag$
            let mut j = i + 1;
            while j < b.len() && (b[j].is_alphanumeric() || b[j] == '_') {
                j += 1;
            }
            if j < b.len() && b[j] == '$' {
                // Search in place: linear in the distance to the closing tag (copying the
                // rest of the text for every tag made long commands quadratic).
                let tag = &b[i..=j];
                match b[j + 1..].windows(tag.len()).position(|w| w == tag) {
                    Some(k) => {
                        i = j + 1 + k + tag.len();
                        cur.push(' ');
                        continue;
                    }
                    None => break,
                }
            }
        }
        if c == ';' {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
        i += 1;
    }
    out.push(cur);
    out.into_iter().filter(|s| !s.trim().is_empty()).collect()
}

fn sql_words(stmt: &str) -> Vec<String> {
    stmt.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '='))
        .filter(|w| !w.is_empty())
        .flat_map(|w| {
            // "1=1" -> "1", "=", "1"
            let mut parts = Vec::new();
            let mut cur = String::new();
            for ch in w.chars() {
                if ch == '=' {
                    if !cur.is_empty() {
                        parts.push(std::mem::take(&mut cur));
                    }
                    parts.push("=".to_string());
                } else {
                    cur.push(ch);
                }
            }
            if !cur.is_empty() {
                parts.push(cur);
            }
            parts
        })
        .map(|w| w.to_ascii_uppercase())
        .collect()
}
