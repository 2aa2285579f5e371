//! The failure webhook: one JSON POST per failed, partial or fenced run and per run that
//! could not start, to where operators already look (Slack, Mattermost and Teams incoming
//! webhooks show its `text`; any JSON receiver can read the other fields).
//!
//! The webhook's URL carries the receiver's token: it lives in a [`Secret`], is never logged
//! (a message names its host at most) and every text sent is scrubbed of it and of the API
//! key. A send is bounded: each attempt is cut after [`ATTEMPT_TIMEOUT`], a connection error,
//! a timeout or an HTTP 5xx (or 429) is retried [`ATTEMPTS`] times in all, nothing else is;
//! a redirect is not followed. A failed send is logged and never changes how a run ends.
//! [`Alert`] is the payload, [`Webhook`] the sender: another command can send its own alerts.

use crate::run::ledger::RunStatus;
use crate::run::RunReport;
use crate::secret::Secret;
use crate::settings::Settings;
use std::time::Duration;

/// Attempts per alert (the first included).
pub const ATTEMPTS: u32 = 3;
/// How long one attempt may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest text sent (the error of a run can be long).
const MAX_TEXT: usize = 1000;

/// What the webhook receives.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Alert {
    /// The job (the ledger's `job`).
    pub job: String,
    /// The Chat app the run exported for (`default`: the TIM_* settings).
    pub app: String,
    /// The run's id; `None` when the run could not start (no ledger row).
    pub run_id: Option<i64>,
    /// `failed`, `partial`, `abandoned` (fenced: another run took it over) or `not_started`.
    pub status: String,
    /// What ended the run (or kept it from starting), on one line.
    pub error: String,
    /// One human line with all of it: what chat webhooks show.
    pub text: String,
    /// The host the run ran on.
    pub host: String,
    /// The run's summary line, as the run printed it (`None` when it could not start).
    pub summary: Option<String>,
}

impl Alert {
    /// The alert about a finished run, if its status calls for one: failed, partial or
    /// abandoned (fenced). A success or an interruption (SIGTERM) is nobody's page.
    pub fn for_run(report: &RunReport, settings: &Settings) -> Option<Alert> {
        let status = report.status;
        if !matches!(
            status,
            RunStatus::Failed | RunStatus::Partial | RunStatus::Abandoned
        ) {
            return None;
        }
        let host = host();
        let error = one_line(report.error.as_deref().unwrap_or("(no error recorded)"));
        let text = format!(
            "receipt-exporter on {host}: run {} (job {}{}) {}: {error}",
            report.run_id,
            report.job,
            app_told(&settings.app_name),
            status.as_str()
        );
        Some(Alert {
            job: report.job.clone(),
            app: settings.app_name.clone(),
            run_id: Some(report.run_id),
            status: status.as_str().into(),
            error,
            text,
            host,
            summary: Some(report.summary(settings)),
        })
    }

    /// The alert about a run of `job` that could not start; `None` when it only found a lock
    /// held (another run of the job, exit 75; the warehouse's past its bound): nothing is
    /// wrong, the next fire time tries again.
    pub fn not_started(job: &str, app: &str, error: &anyhow::Error) -> Option<Alert> {
        if error.chain().any(crate::run::busy) {
            return None;
        }
        let host = host();
        let error_line = one_line(&format!("{error:#}"));
        Some(Alert {
            job: job.to_string(),
            app: app.to_string(),
            run_id: None,
            status: "not_started".into(),
            text: format!(
                "receipt-exporter on {host}: a run of job {job}{} could not start: {error_line}",
                app_told(app)
            ),
            error: error_line,
            host,
            summary: None,
        })
    }
}

/// `, app NAME` for an app other than the default, which alerts of one-app deployments omit.
fn app_told(app: &str) -> String {
    match app {
        crate::settings::apps::DEFAULT_APP => String::new(),
        app => format!(", app {app}"),
    }
}

fn host() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// A text on one line: control characters shown escaped, cut to [`MAX_TEXT`].
fn one_line(text: &str) -> String {
    crate::untrusted::server_text(text, &[], MAX_TEXT)
}

/// Why a send failed, for the log line (never the URL).
#[derive(Debug, thiserror::Error)]
#[error("the alert webhook at host {host} {problem}")]
pub struct AlertError {
    host: String,
    problem: String,
}

/// The configured webhook.
pub struct Webhook {
    url: Secret,
    /// The URL's host: the most of it any message shows.
    host: String,
    http: reqwest::Client,
}

impl Webhook {
    /// The webhook of `settings`, if one is configured.
    pub fn from_settings(settings: &Settings) -> Option<Webhook> {
        let url = settings.alert_webhook.clone()?;
        let host = reqwest::Url::parse(url.expose())
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_else(|| "?".into());
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .timeout(ATTEMPT_TIMEOUT)
            .connect_timeout(ATTEMPT_TIMEOUT)
            .build()
            .ok()?;
        Some(Webhook { url, host, http })
    }

    /// The host the webhook's URL names (safe to show).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Whether the webhook's host answers, without sending an alert: one HEAD request (no
    /// body, so no receiver posts anything). `Ok`: the HTTP status it answered with.
    pub async fn probe(&self) -> Result<u16, String> {
        match self.http.head(self.url.expose()).send().await {
            Ok(answer) => Ok(answer.status().as_u16()),
            Err(e) => {
                let e = e.without_url();
                Err(crate::secret::scrub(&chain(&e), &[&self.url]))
            }
        }
    }

    /// POSTs `alert` as JSON, retrying connection errors, timeouts and 5xx/429 answers.
    /// `secrets` (the API key, say) are scrubbed from every text sent, as is the URL itself.
    pub async fn send(&self, alert: &Alert, secrets: &[&Secret]) -> Result<(), AlertError> {
        let body = self.scrubbed(alert, secrets);
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            match self.attempt(&body).await {
                Ok(()) => return Ok(()),
                Err((problem, retry)) => {
                    last = problem;
                    if !retry {
                        break;
                    }
                }
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
            }
        }
        Err(AlertError {
            host: self.host.clone(),
            problem: last,
        })
    }

    /// The alert as sent: every text scrubbed of the secrets and of the URL.
    fn scrubbed(&self, alert: &Alert, secrets: &[&Secret]) -> serde_json::Value {
        let mut all: Vec<&Secret> = secrets.to_vec();
        all.push(&self.url);
        let clean = |t: &str| crate::secret::scrub(t, &all);
        let mut alert = alert.clone();
        alert.error = clean(&alert.error);
        alert.text = clean(&alert.text);
        alert.summary = alert.summary.as_deref().map(clean);
        serde_json::to_value(&alert).unwrap_or_default()
    }

    /// One POST: `Err((what happened, whether to retry))`.
    async fn attempt(&self, body: &serde_json::Value) -> Result<(), (String, bool)> {
        let sent = self.http.post(self.url.expose()).json(body).send().await;
        let answer = match sent {
            Ok(answer) => answer,
            Err(e) => {
                let e = e.without_url();
                let text = crate::secret::scrub(&chain(&e), &[&self.url]);
                return Err((format!("did not answer: {text}"), true));
            }
        };
        let status = answer.status();
        if status.is_success() {
            return Ok(());
        }
        let retry = status.is_server_error() || status.as_u16() == 429;
        let what = if status.is_redirection() {
            format!("answered HTTP {status}, a redirect: not followed (check EXPORT_ALERT_WEBHOOK)")
        } else {
            format!("answered HTTP {status}")
        };
        Err((what, retry))
    }
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Sends `alert` to the configured webhook, if both exist; logs how it went (never the URL).
/// Never fails: an alert that cannot be sent must not change how a run ends.
pub async fn notify(settings: &Settings, alert: Option<Alert>) {
    let (Some(alert), Some(hook)) = (alert, Webhook::from_settings(settings)) else {
        return;
    };
    let key: Vec<&Secret> = settings.secret_key.iter().collect();
    match hook.send(&alert, &key).await {
        Ok(()) => tracing::info!(
            job = %alert.job,
            status = %alert.status,
            "alert sent to the webhook at host {}",
            hook.host()
        ),
        Err(e) => {
            tracing::warn!(job = %alert.job, status = %alert.status, "{e}: the alert was not delivered")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_held_elsewhere_is_not_an_alert_and_other_failures_are() {
        let held = anyhow::Error::from(crate::run::LockHeld {
            job: "hourly".into(),
            holder: "run 3".into(),
        });
        assert!(Alert::not_started("hourly", "default", &held).is_none());
        let down = anyhow::anyhow!("connection refused\nsecond line").context("while connecting");
        let alert = Alert::not_started("hourly", "default", &down).unwrap();
        assert_eq!((alert.run_id, alert.status.as_str()), (None, "not_started"));
        assert_eq!(
            alert.error,
            "while connecting: connection refused\\nsecond line"
        );
        assert!(alert
            .text
            .contains("a run of job hourly could not start: while connecting"));
    }
}
