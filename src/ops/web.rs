//! `daemon --listen ADDR`: the read-only status page (`/`), the `status --json` document
//! (`/api/status`) and the metrics (`/metrics`) over plain HTTP. What it serves comes from
//! a cache the daemon refreshes in the background (every 5 minutes, and at once after a run or
//! a reload), so requests never read storage: many viewers cost what one `status` costs.
//! Loopback by default; on any other address every request needs
//! `Authorization: Bearer TOKEN` (the token from `--listen-token-file`), compared in
//! constant time; without it the answer is 401. Only GET and HEAD; small bounded request
//! heads; a strict Content-Security-Policy (the page needs nothing but its inline style).

use std::sync::Arc;
use std::time::Duration;

use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, RwLock};

use super::page::{self, JobPage};
use crate::config::JobPlan;
use crate::error::{Error, Result};

/// How often the cache is refreshed when nothing happens (each refresh reads what one
/// `status` reads; runs and reloads refresh it at once).
pub(crate) const REFRESH: Duration = Duration::from_secs(300);

/// The most a request head may hold.
const HEAD_MAX: usize = 8 * 1024;

/// What the server answers from.
#[derive(Default)]
pub(crate) struct Cache {
    pages: Vec<JobPage>,
    at: Option<jiff::Timestamp>,
}

/// The shared cache, the plans it is computed for, and a bell that asks for a refresh.
#[derive(Clone)]
pub(crate) struct Site {
    cache: Arc<RwLock<Cache>>,
    plans: Arc<RwLock<Vec<JobPlan>>>,
    bell: Arc<Notify>,
}

impl Site {
    pub(crate) fn new(plans: Vec<JobPlan>) -> Site {
        Site {
            cache: Arc::default(),
            plans: Arc::new(RwLock::new(plans)),
            bell: Arc::new(Notify::new()),
        }
    }

    /// New plans (a reload): refreshed at once.
    pub(crate) async fn set_plans(&self, plans: Vec<JobPlan>) {
        *self.plans.write().await = plans;
        self.bell.notify_one();
    }

    /// Something changed (a run ended): refresh soon.
    pub(crate) fn poke(&self) {
        self.bell.notify_one();
    }

    /// Refresh the cache now, then every [`REFRESH`] or when poked; never returns.
    pub(crate) async fn refresher(self) {
        loop {
            let plans = self.plans.read().await.clone();
            let now = jiff::Timestamp::now();
            let pages = page::gather(&plans, now, true).await;
            {
                let mut c = self.cache.write().await;
                c.pages = pages;
                c.at = Some(now);
            }
            crate::state::metrics::after_run();
            tokio::select! {
                _ = tokio::time::sleep(REFRESH) => {}
                _ = self.bell.notified() => {
                    // Runs often end in bursts: let them settle.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// Read the bearer token from `path`: one line, at least 16 characters.
pub(crate) fn read_token(path: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::config(format!("--listen-token-file {}: {e}", path.display())))?;
    let t = text.trim().to_string();
    if t.len() < 16 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::config(format!(
            "--listen-token-file {}: the token must be one line of at least 16 characters without spaces \
             (e.g. `openssl rand -hex 32 > FILE`)",
            path.display()
        )));
    }
    Ok(t)
}

/// Equal without telling how much of it was (both sides hashed first: same length).
fn same_token(given: &str, want: &str) -> bool {
    let (a, b) = (
        sha2::Sha256::digest(given.as_bytes()),
        sha2::Sha256::digest(want.as_bytes()),
    );
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Serve `site` on `listener` until the task is dropped.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    site: Site,
    token: Option<String>,
) -> std::io::Result<()> {
    let token = token.map(Arc::new);
    loop {
        let (sock, _) = listener.accept().await?;
        let (site, token) = (site.clone(), token.clone());
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(15), answer(sock, site, token)).await;
        });
    }
}

async fn answer(
    mut sock: tokio::net::TcpStream,
    site: Site,
    token: Option<Arc<String>>,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > HEAD_MAX {
            return reply(
                &mut sock,
                "431 Request Header Fields Too Large",
                "text/plain",
                b"request head too large\n",
                false,
            )
            .await;
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let (method, target) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return reply(
            &mut sock,
            "405 Method Not Allowed",
            "text/plain",
            b"read-only: GET or HEAD\n",
            false,
        )
        .await;
    }
    if let Some(want) = &token {
        let given = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("authorization"))
            .and_then(|(_, v)| v.trim().strip_prefix("Bearer ").map(str::trim));
        if !given.is_some_and(|g| same_token(g, want)) {
            return reply(
                &mut sock,
                "401 Unauthorized",
                "text/plain",
                b"a bearer token is required\n",
                head_only,
            )
            .await;
        }
    }
    let path = target.split('?').next().unwrap_or("");
    // Right after start the first refresh may still be reading storage: wait for it a while.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while site.cache.read().await.at.is_none() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    match path {
        "/" | "/index.html" => {
            let c = site.cache.read().await;
            let body = page::render(
                &c.pages,
                c.at.unwrap_or_else(jiff::Timestamp::now),
                Some(60),
            );
            reply(
                &mut sock,
                "200 OK",
                "text/html; charset=utf-8",
                body.as_bytes(),
                head_only,
            )
            .await
        }
        "/api/status" => {
            let c = site.cache.read().await;
            let doc: Vec<_> = c.pages.iter().map(|p| &p.status).collect();
            let body = serde_json::to_vec_pretty(&doc).unwrap_or_default();
            reply(&mut sock, "200 OK", "application/json", &body, head_only).await
        }
        "/metrics" => {
            let body = crate::state::metrics::render(&crate::state::jobstate::load_all());
            reply(
                &mut sock,
                "200 OK",
                "text/plain; version=0.0.4",
                body.as_bytes(),
                head_only,
            )
            .await
        }
        _ => {
            reply(
                &mut sock,
                "404 Not Found",
                "text/plain",
                b"try /, /api/status or /metrics\n",
                head_only,
            )
            .await
        }
    }
}

async fn reply(
    sock: &mut tokio::net::TcpStream,
    status: &str,
    ctype: &str,
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n\
         X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\nX-Frame-Options: DENY\r\n\
         Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'\r\n\
         {}Connection: close\r\n\r\n",
        body.len(),
        if status.starts_with("401") {
            "WWW-Authenticate: Bearer\r\n"
        } else {
            ""
        }
    );
    sock.write_all(head.as_bytes()).await?;
    if !head_only {
        sock.write_all(body).await?;
    }
    sock.shutdown().await
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_compare_whole() {
        assert!(super::same_token("0123456789abcdef", "0123456789abcdef"));
        assert!(!super::same_token("0123456789abcdeg", "0123456789abcdef"));
        assert!(!super::same_token("0123456789abcdef0", "0123456789abcdef"));
        assert!(!super::same_token("", "0123456789abcdef"));
    }
}
