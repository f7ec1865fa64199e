//! The command line's calls to a running coordinator's operator API: where it
//! is, the API token (`--token` or `TILLSWARM_TOKEN`) and, for HTTPS with a
//! private CA, the CA to trust.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

/// Where and how to reach the coordinator.
#[derive(Debug, Clone, Args)]
pub struct Remote {
    /// The coordinator's URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub coordinator: String,
    /// An API token (`tillswarm coordinator token create`).
    #[arg(long, env = "TILLSWARM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Trust only this CA (PEM) for an https:// coordinator.
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
}

impl Remote {
    /// A request to `path` (e.g. `/api/v1/packages`) carrying the token.
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> anyhow::Result<reqwest::RequestBuilder> {
        let client = tillswarm_node::tls::http_client(self.ca_file.as_deref())?
            .build()
            .context("building the HTTP client")?;
        let url = format!("{}{path}", self.coordinator.trim_end_matches('/'));
        let request = client.request(method, url);
        Ok(match &self.token {
            Some(t) => request.bearer_auth(t),
            None => request,
        })
    }

    /// Checks the credentials with a cheap call before a large upload: a
    /// coordinator that refuses a request closes the connection while the
    /// body is still being sent, which a client reports only as a broken pipe.
    pub async fn check_access(&self) -> anyhow::Result<()> {
        let response = self
            .request(reqwest::Method::GET, "/api/v1/session")?
            .send()
            .await
            .with_context(|| format!("reaching {}", self.coordinator))?;
        Self::check(response, "the coordinator refused the credentials").await?;
        Ok(())
    }

    /// The body of a successful response, or an error naming what was refused
    /// (with a hint when no token was given).
    pub async fn check(response: reqwest::Response, what: &str) -> anyhow::Result<String> {
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            anyhow::bail!(
                "{what} ({status}): {text}\nhint: pass --token or set TILLSWARM_TOKEN \
                 (tillswarm coordinator token create --name NAME --role operator)"
            );
        }
        anyhow::ensure!(status.is_success(), "{what} ({status}): {text}");
        Ok(text)
    }
}
