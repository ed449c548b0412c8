//! Notifications (`[notify]`): a webhook POST on failure (and on success or anomaly when
//! asked) with a JSON, Slack or ntfy body, and healthchecks.io-style pings (`URL/start`
//! when a backup starts, `URL` when it succeeds, `URL/fail` with the error as the body).
//! Each delivery has a short per-attempt timeout and three attempts with backoff; a
//! failure is logged and never fails the run it reports on.

use std::time::Duration;

use serde::Serialize;

use crate::config::{JobPlan, NotifyPlan};
use crate::snapshot::{Manifest, Trigger};

/// The webhook's JSON body (`format = "json"`). Stable: fields are only ever added.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Event {
    /// "failure", "success", "anomaly" or "verify_failure".
    pub event: String,
    pub job: String,
    pub snapshot: Option<String>,
    pub error: Option<String>,
    pub host: String,
    pub trigger: Option<String>,
    /// When this event was sent.
    pub time: String,
    pub started: Option<String>,
    pub finished: Option<String>,
    pub duration_ms: Option<u64>,
    pub stored_bytes: Option<u64>,
    pub backstop_version: String,
}

impl Event {
    fn new(event: &str, job: &str) -> Event {
        Event {
            event: event.into(),
            job: job.into(),
            snapshot: None,
            error: None,
            host: crate::state::hostname(),
            trigger: None,
            time: jiff::Timestamp::now().to_string(),
            started: None,
            finished: None,
            duration_ms: None,
            stored_bytes: None,
            backstop_version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    fn summary(&self) -> String {
        match self.event.as_str() {
            "failure" => format!(
                "backstop: backup of job {} on {} FAILED: {}",
                self.job,
                self.host,
                self.error.as_deref().unwrap_or("?")
            ),
            "verify_failure" => format!(
                "backstop: restore drill of job {} on {} FAILED: {}",
                self.job,
                self.host,
                self.error.as_deref().unwrap_or("?")
            ),
            "anomaly" => format!(
                "backstop: shrink alarm for job {}: snapshot {} holds much less data than the previous one (which is pinned)",
                self.job,
                self.snapshot.as_deref().unwrap_or("?")
            ),
            _ => format!(
                "backstop: job {}: snapshot {} complete ({} bytes stored)",
                self.job,
                self.snapshot.as_deref().unwrap_or("?"),
                self.stored_bytes.unwrap_or(0)
            ),
        }
    }
}

/// A backup is starting: the healthcheck's `/start` ping.
pub(crate) async fn started(plan: &JobPlan) {
    if let Some(n) = &plan.notify
        && let Some(hc) = &n.healthcheck
    {
        let url = format!("{}/start", hc.trim_end_matches('/'));
        deliver(n, Request::get(url)).await;
    }
}

/// A backup ended: healthcheck ping, and the webhook when the event is wanted.
pub(crate) async fn after_backup(
    plan: &JobPlan,
    trigger: Trigger,
    res: &crate::error::Result<Manifest>,
) {
    let Some(n) = &plan.notify else { return };
    let mut events = Vec::new();
    match res {
        Ok(m) => {
            let mut e = Event::new("success", &plan.name);
            e.snapshot = Some(m.snapshot.clone());
            e.trigger = Some(trigger.to_string());
            e.started = Some(m.started.clone());
            e.finished = Some(m.finished.clone());
            e.duration_ms = Some(m.duration_ms);
            e.stored_bytes = Some(m.stored_bytes);
            if let Some(hc) = &n.healthcheck {
                deliver(n, Request::get(hc.trim_end_matches('/').to_string())).await;
            }
            if m.anomalous && n.on_anomaly {
                let mut a = e.clone();
                a.event = "anomaly".into();
                events.push(a);
            }
            if n.on_success {
                events.push(e);
            }
        }
        Err(err) => {
            let mut e = Event::new("failure", &plan.name);
            e.trigger = Some(trigger.to_string());
            e.error = Some(err.message().to_string());
            if let Some(hc) = &n.healthcheck {
                let url = format!("{}/fail", hc.trim_end_matches('/'));
                deliver(
                    n,
                    Request::post(url, err.message().to_string(), "text/plain"),
                )
                .await;
            }
            events.push(e);
        }
    }
    for e in events {
        send_event(n, &e).await;
    }
}

/// A restore drill failed (or found wrong data): the webhook is told.
pub(crate) async fn verify_failed(plan: &JobPlan, error: &str) {
    let Some(n) = &plan.notify else { return };
    let mut e = Event::new("verify_failure", &plan.name);
    e.error = Some(error.to_string());
    send_event(n, &e).await;
}

async fn send_event(n: &NotifyPlan, e: &Event) {
    let Some(url) = &n.webhook else { return };
    let req = match n.format.as_str() {
        "slack" => Request::post(
            url.clone(),
            serde_json::json!({"text": e.summary()}).to_string(),
            "application/json",
        ),
        "ntfy" => {
            let mut r = Request::post(url.clone(), e.summary(), "text/plain");
            r.headers
                .push(("Title", format!("backstop: {} {}", e.job, e.event)));
            let urgent = e.event != "success";
            r.headers
                .push(("Priority", if urgent { "high" } else { "default" }.into()));
            r.headers.push((
                "Tags",
                if urgent {
                    "warning"
                } else {
                    "white_check_mark"
                }
                .into(),
            ));
            r
        }
        _ => Request::post(
            url.clone(),
            serde_json::to_string(e).unwrap_or_default(),
            "application/json",
        ),
    };
    deliver(n, req).await;
}

struct Request {
    method: &'static str,
    url: String,
    body: Option<(String, &'static str)>,
    headers: Vec<(&'static str, String)>,
}

impl Request {
    fn get(url: String) -> Request {
        Request {
            method: "GET",
            url,
            body: None,
            headers: Vec::new(),
        }
    }
    fn post(url: String, body: String, ctype: &'static str) -> Request {
        Request {
            method: "POST",
            url,
            body: Some((body, ctype)),
            headers: Vec::new(),
        }
    }
}

/// Send with retries; every outcome is only logged.
async fn deliver(n: &NotifyPlan, req: Request) {
    let timeout = n.timeout;
    // Webhook URLs carry secrets in their path: log the host only.
    let shown = req.url.split('/').take(3).collect::<Vec<_>>().join("/");
    let full_url = req.url.clone();
    let res = tokio::task::spawn_blocking(move || {
        let agent = ureq::AgentBuilder::new()
            .timeout(timeout)
            .user_agent(concat!("backstop/", env!("CARGO_PKG_VERSION")))
            .build();
        let mut last = String::new();
        for attempt in 0..3u32 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(500 * 2u64.pow(attempt - 1)));
            }
            let mut r = agent.request(req.method, &req.url);
            for (k, v) in &req.headers {
                r = r.set(k, v);
            }
            let out = match &req.body {
                Some((b, ctype)) => r.set("Content-Type", ctype).send_string(b),
                None => r.call(),
            };
            match out {
                Ok(_) => return Ok(attempt + 1),
                // A 4xx will not get better by retrying.
                Err(ureq::Error::Status(code, _)) if (400..500).contains(&code) => {
                    return Err(format!("HTTP {code}"));
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    })
    .await;
    match res {
        Ok(Ok(n)) => tracing::debug!("notified {shown} (attempt {n})"),
        // The URL is a secret (webhook tokens, healthcheck UUIDs): only its origin is shown.
        Ok(Err(e)) => tracing::warn!(
            "notification to {shown} failed: {}",
            crate::text::redact_secrets(&e.to_string().replace(&full_url, &shown))
        ),
        Err(e) => tracing::warn!(
            "notification to {shown} failed: {}",
            crate::text::redact_secrets(&e.to_string().replace(&full_url, &shown))
        ),
    }
}
