//! The agent's HTTP client for the server's agent API: JSON over plain HTTP with
//! the provider token as a bearer token, and the server's error bodies decoded.

use std::time::Duration;

use agora_proto::agent::{Heartbeat, HeartbeatResponse, RegisterAgent, RegisterResponse};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Why a call to the server failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No answer: connection refused, timeout, reset (the server may be restarting).
    #[error("server unreachable: {0}")]
    Network(String),
    /// The server answered with a non-2xx status.
    #[error("server answered {status}: {code}: {message}{}", field.as_deref().map(|f| format!(" (field `{f}`)")).unwrap_or_default())]
    Status {
        status: u16,
        code: String,
        message: String,
        field: Option<String>,
    },
    /// A 2xx answer whose body is not what the protocol says.
    #[error("unreadable answer from the server: {0}")]
    Decode(String),
}

impl CallError {
    /// The token was refused: retrying cannot help.
    pub fn is_auth(&self) -> bool {
        matches!(self, CallError::Status { status: 401 | 403, .. })
    }

    /// The server does not know this agent (e.g. it lost its state): register again.
    pub fn is_unknown_agent(&self) -> bool {
        matches!(self, CallError::Status { status: 404, .. })
    }

    /// The server is down, restarting or failing: it may have forgotten us by
    /// the time it answers again, so the agent re-registers first.
    pub fn is_outage(&self) -> bool {
        match self {
            CallError::Network(_) => true,
            CallError::Status { status, .. } => *status >= 500,
            CallError::Decode(_) => false,
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
    #[serde(default)]
    field: Option<String>,
}

/// Talks to one server as one provider.
#[derive(Clone, Debug)]
pub struct ServerClient {
    http: reqwest::Client,
    server: String,
    token: String,
}

impl ServerClient {
    pub fn new(server: &str, token: &str, request_timeout: Duration) -> Result<ServerClient, CallError> {
        let http = reqwest::Client::builder()
            .timeout(request_timeout)
            .connect_timeout(request_timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| CallError::Network(e.to_string()))?;
        Ok(ServerClient {
            http,
            server: server.trim_end_matches('/').to_string(),
            token: token.to_string(),
        })
    }

    pub async fn register(&self, body: &RegisterAgent) -> Result<RegisterResponse, CallError> {
        self.post("/api/v1/agent/register", body).await
    }

    pub async fn heartbeat(&self, body: &Heartbeat) -> Result<HeartbeatResponse, CallError> {
        self.post("/api/v1/agent/heartbeat", body).await
    }

    async fn post<B: serde::Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, CallError> {
        let response = self
            .http
            .post(format!("{}{path}", self.server))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .map_err(|e| CallError::Network(error_chain(&e)))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| CallError::Network(error_chain(&e)))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| CallError::Decode(e.to_string()));
        }
        Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(b) => CallError::Status {
                status: status.as_u16(),
                code: b.error.code,
                message: b.error.message,
                field: b.error.field,
            },
            // A proxy's or a crashing server's page: keep a bounded excerpt.
            Err(_) => CallError::Status {
                status: status.as_u16(),
                code: status
                    .canonical_reason()
                    .unwrap_or("error")
                    .to_lowercase()
                    .replace(' ', "_"),
                message: String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                    .trim()
                    .to_string(),
                field: None,
            },
        })
    }
}

/// reqwest's top-level message is often just "error sending request"; the
/// cause (connection refused, timed out) is what an operator needs.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_classes() {
        let status = |s: u16| CallError::Status {
            status: s,
            code: "x".into(),
            message: "m".into(),
            field: None,
        };
        assert!(status(401).is_auth() && status(403).is_auth() && !status(404).is_auth());
        assert!(status(404).is_unknown_agent());
        assert!(status(503).is_outage() && CallError::Network("refused".into()).is_outage());
        assert!(!status(400).is_outage() && !CallError::Decode("x".into()).is_outage());
        let e = CallError::Status {
            status: 400,
            code: "invalid".into(),
            message: "bad name".into(),
            field: Some("name".into()),
        };
        assert_eq!(e.to_string(), "server answered 400: invalid: bad name (field `name`)");
    }
}
