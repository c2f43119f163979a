//! The CLI's HTTP client: bearer auth, JSON in and out, API errors turned into
//! readable messages that keep the server's code, field and line.

use agora_proto::api::ErrorBody;
use anyhow::{Context, anyhow};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub(crate) struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// An error answer of the API, kept whole so the CLI can print it and pick an exit code.
#[derive(Debug)]
pub(crate) struct ApiFailure {
    pub(crate) status: u16,
    pub(crate) body: Option<ErrorBody>,
    pub(crate) raw: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.body {
            Some(b) => {
                write!(f, "{} ({})", b.error.message, b.error.code)?;
                if let Some(field) = &b.error.field {
                    write!(f, " [field: {field}")?;
                    if let Some(line) = b.error.line {
                        write!(f, ", line {line}")?;
                    }
                    write!(f, "]")?;
                }
                Ok(())
            }
            None => write!(f, "HTTP {}: {}", self.status, self.raw),
        }
    }
}

impl std::error::Error for ApiFailure {}

impl Client {
    pub(crate) fn new(base: &str, token: Option<String>) -> anyhow::Result<Client> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(anyhow!("the server URL `{base}` must start with http:// or https://"));
        }
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()?;
        Ok(Client { base, token, http })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        r
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> anyhow::Result<T> {
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the exchange at {}", self.base))?;
        let status = resp.status();
        let text = resp.text().await.context("reading the answer")?;
        if !status.is_success() {
            let body = serde_json::from_str::<ErrorBody>(&text).ok();
            return Err(ApiFailure {
                status: status.as_u16(),
                body,
                raw: text,
            }
            .into());
        }
        serde_json::from_str(&text).with_context(|| format!("unexpected answer from the exchange: {text}"))
    }

    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    pub(crate) async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> anyhow::Result<T> {
        self.send(self.request(reqwest::Method::POST, path).json(body)).await
    }

    pub(crate) async fn post_yaml<T: DeserializeOwned>(&self, path: &str, yaml: String) -> anyhow::Result<T> {
        self.send(
            self.request(reqwest::Method::POST, path)
                .header("content-type", "application/yaml")
                .body(yaml),
        )
        .await
    }
}
