//! PostgreSQL connection URLs as a job file writes them: parsed once, the password held apart
//! (children get it through `PGPASSWORD`, never argv) and hidden whenever one is shown.

/// A parsed `postgres://` URL. The password is held apart: children get it through
/// `PGPASSWORD`, never on their command line, and `Display` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl {
    user: Option<String>,
    password: Option<String>,
    host: String,
    port: u16,
    dbname: String,
    params: Vec<(String, String)>,
}

impl std::fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgUrl({self})")
    }
}

impl std::fmt::Display for PgUrl {
    /// The URL without its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.conninfo())
    }
}

impl PgUrl {
    pub fn parse(s: &str) -> std::result::Result<PgUrl, String> {
        let u = url::Url::parse(s).map_err(|e| {
            format!(
                "= {:?} is not a URL ({e}); write postgres://user@host:5432/dbname",
                redact(s)
            )
        })?;
        if u.scheme() != "postgres" && u.scheme() != "postgresql" {
            return Err(format!(
                "= {:?} has scheme {:?}; valid: postgres://user@host:5432/dbname",
                redact(s),
                u.scheme()
            ));
        }
        let dec = |v: &str| {
            url::form_urlencoded::parse(format!("x={v}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let user = (!u.username().is_empty()).then(|| dec(u.username()));
        let mut password = u.password().map(dec);
        let mut host = u
            .host_str()
            .unwrap_or("")
            .trim_matches(['[', ']'])
            .to_string();
        let mut params = Vec::new();
        for (k, v) in u.query_pairs() {
            if k == "host" && host.is_empty() {
                host = v.into_owned();
            } else if k == "password" {
                // Held apart like the URL's own password: never in argv or logs.
                password.get_or_insert_with(|| v.into_owned());
            } else {
                params.push((k.into_owned(), v.into_owned()));
            }
        }
        if host.is_empty() {
            host = "localhost".to_string();
        }
        let dbname = dec(u.path().trim_start_matches('/'));
        let dbname = if dbname.is_empty() {
            match &user {
                Some(u) => u.clone(),
                None => {
                    return Err(format!(
                        "= {:?} names no database; add it as the path: postgres://user@host:5432/dbname",
                        redact(s)
                    ));
                }
            }
        } else {
            dbname
        };
        Ok(PgUrl {
            user,
            password,
            host,
            port: u.port().unwrap_or(5432),
            dbname,
            params,
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn dbname(&self) -> &str {
        &self.dbname
    }
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The same server, another database.
    pub fn with_dbname(&self, dbname: &str) -> PgUrl {
        PgUrl {
            dbname: dbname.to_string(),
            ..self.clone()
        }
    }

    /// A libpq URL without the password, for argv and logs.
    pub fn conninfo(&self) -> String {
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let mut out = String::from("postgresql://");
        if let Some(u) = &self.user {
            out.push_str(&enc(u));
            out.push('@');
        }
        if self.host.starts_with('/') {
            // A socket directory goes in the query string.
            out.push_str(&format!(
                ":{}/{}?host={}",
                self.port,
                enc(&self.dbname),
                enc(&self.host)
            ));
            for (k, v) in &self.params {
                out.push_str(&format!("&{}={}", enc(k), enc(v)));
            }
            return out;
        }
        if self.host.contains(':') {
            out.push_str(&format!("[{}]", self.host));
        } else {
            out.push_str(&self.host);
        }
        out.push_str(&format!(":{}/{}", self.port, enc(&self.dbname)));
        for (i, (k, v)) in self.params.iter().enumerate() {
            out.push(if i == 0 { '?' } else { '&' });
            out.push_str(&format!("{}={}", enc(k), enc(v)));
        }
        out
    }
}

/// Hide a password in a URL-ish string for error messages.
pub fn redact(s: &str) -> String {
    match url::Url::parse(s) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => s.to_string(),
    }
}
