//! Test harness: a real exchange made of OS processes — `agora serve` and
//! `agora agent`s — reached over real sockets.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agora_proto::api::{CreatedPrincipal, ErrorBody, JobView, LogsResponse};
use serde_json::Value;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_agora");

/// Everything a test can wait for is bounded by this, so a broken build fails instead of hanging.
pub(crate) const WAIT: Duration = Duration::from_secs(60);

pub(crate) struct Exchange {
    pub(crate) url: String,
    pub(crate) port: u16,
    pub(crate) admin: String,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) server: Option<Child>,
    pub(crate) agents: Vec<Child>,
    pub(crate) http: reqwest::Client,
    pub(crate) server_args: Vec<String>,
}

fn wait_for_file_line(path: &Path, prefix: &str, err: &Path) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Some(line) = text.lines().find(|l| l.starts_with(prefix))
        {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for `{prefix}` in {}; stderr:\n{}",
            path.display(),
            std::fs::read_to_string(err).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Fast settings so tests run in seconds: 200 ms rounds and heartbeats, a 2 s stop grace.
pub(crate) fn fast_args() -> Vec<String> {
    [
        "--round-interval-ms",
        "200",
        "--heartbeat-interval-ms",
        "200",
        "--stop-grace-ms",
        "2000",
        "--agent-timeout-ms",
        "5000",
        "--settle-interval-ms",
        "1000",
        "--fee-bps",
        "500",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

impl Exchange {
    pub(crate) async fn start() -> Exchange {
        Exchange::start_with(fast_args()).await
    }

    pub(crate) async fn start_with(server_args: Vec<String>) -> Exchange {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut ex = Exchange {
            url: String::new(),
            port: 0,
            admin: String::new(),
            dir,
            server: None,
            agents: Vec::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            server_args,
        };
        ex.spawn_server(0, 0);
        ex.admin = std::fs::read_to_string(ex.dir.path().join("data/admin.token"))
            .expect("admin token written")
            .trim()
            .to_string();
        ex
    }

    fn spawn_server(&mut self, port: u16, generation: u32) {
        let out = self.dir.path().join(format!("server-{generation}.out"));
        let err_path = self.dir.path().join(format!("server-{generation}.err"));
        let err = std::fs::File::create(&err_path).unwrap();
        let child = Command::new(BIN)
            .arg("serve")
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(&self.server_args)
            .env("AGORA_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(err)
            .spawn()
            .expect("start agora serve");
        self.server = Some(child);
        let line = wait_for_file_line(&out, "serving on ", &err_path);
        self.url = line.trim_start_matches("serving on ").trim().to_string();
        self.port = self.url.rsplit(':').next().unwrap().parse().unwrap();
    }

    /// kill -9 the server, then start it again on the same port and data.
    pub(crate) fn crash_and_restart(&mut self, generation: u32) {
        let mut s = self.server.take().expect("server running");
        s.kill().expect("SIGKILL the server");
        s.wait().unwrap();
        self.spawn_server(self.port, generation);
    }

    pub(crate) fn server_log(&self) -> String {
        let mut all = String::new();
        for entry in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            let p = entry.path();
            if p.extension().is_some_and(|e| e == "err") {
                all.push_str(&format!(
                    "==> {}\n{}",
                    p.display(),
                    std::fs::read_to_string(&p).unwrap_or_default()
                ));
            }
        }
        all
    }

    pub(crate) async fn create_tenant(&self, name: &str, balance: &str) -> (u64, String) {
        let p: CreatedPrincipal = self
            .post_ok(
                &self.admin,
                "/api/v1/admin/tenants",
                serde_json::json!({"name": name, "initial_balance": balance}),
            )
            .await;
        (p.id, p.token)
    }

    pub(crate) async fn create_provider(&self, name: &str) -> (u64, String) {
        let p: CreatedPrincipal = self
            .post_ok(
                &self.admin,
                "/api/v1/admin/providers",
                serde_json::json!({"name": name}),
            )
            .await;
        (p.id, p.token)
    }

    /// Starts `agora agent` with a declared inventory of one node.
    pub(crate) fn start_agent(&mut self, token: &str, name: &str, gpus: u32, model: &str, price: &str, address: &str) {
        let inventory = format!(
            "nodes:\n  - name: {name}-node\n    gpu_model: {model}\n    gpus: {gpus}\n    address: {address}\n    price_per_gpu_hour: \"{price}\"\n"
        );
        self.start_agent_with(token, name, &inventory);
    }

    /// Starts `agora agent` with the given YAML for its inventory (`sites:` and `nodes:`).
    pub(crate) fn start_agent_with(&mut self, token: &str, name: &str, inventory: &str) {
        let cfg = self.dir.path().join(format!("agent-{name}.yaml"));
        std::fs::write(
            &cfg,
            format!("server: {}\nname: {name}\ninventory: declared\n{inventory}", self.url),
        )
        .unwrap();
        let err = std::fs::File::create(self.dir.path().join(format!("agent-{name}.err"))).unwrap();
        let child = Command::new(BIN)
            .arg("agent")
            .arg("--config")
            .arg(&cfg)
            .env("AGORA_TOKEN", token)
            .env("AGORA_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("start agora agent");
        self.agents.push(child);
    }

    /// Waits until the exchange lists `count` online nodes.
    pub(crate) async fn wait_nodes(&self, count: usize) {
        let deadline = Instant::now() + WAIT;
        loop {
            let nodes: Vec<Value> = self.get_ok(&self.admin, "/api/v1/admin/nodes").await;
            if nodes.iter().filter(|n| n["online"] == true).count() >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nodes never came online:\n{}",
                self.server_log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) async fn request(
        &self,
        method: reqwest::Method,
        token: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> (u16, Value) {
        let what = format!("{method} {path}");
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token);
        if let Some((ct, bytes)) = body {
            r = r.header("content-type", ct).body(bytes);
        }
        let resp = r
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: the request did not reach the server: {e:?}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("non-JSON answer ({status}): {text}"));
        (status, value)
    }

    pub(crate) async fn get_ok<T: serde::de::DeserializeOwned>(&self, token: &str, path: &str) -> T {
        let (status, v) = self.request(reqwest::Method::GET, token, path, None).await;
        assert_eq!(status, 200, "GET {path}: {v}");
        serde_json::from_value(v).unwrap()
    }

    pub(crate) async fn post_ok<T: serde::de::DeserializeOwned>(&self, token: &str, path: &str, body: Value) -> T {
        let (status, v) = self
            .request(
                reqwest::Method::POST,
                token,
                path,
                Some(("application/json", body.to_string().into_bytes())),
            )
            .await;
        assert!(status == 200 || status == 201, "POST {path}: {status} {v}");
        serde_json::from_value(v).unwrap()
    }

    pub(crate) async fn submit(&self, token: &str, yaml: &str) -> Result<u64, (u16, ErrorBody)> {
        let (status, v) = self
            .request(
                reqwest::Method::POST,
                token,
                "/api/v1/jobs",
                Some(("application/yaml", yaml.as_bytes().to_vec())),
            )
            .await;
        if status == 201 {
            Ok(v["job_id"].as_u64().unwrap())
        } else {
            Err((status, serde_json::from_value(v).expect("an error body")))
        }
    }

    pub(crate) async fn job(&self, token: &str, id: u64) -> JobView {
        self.get_ok(token, &format!("/api/v1/jobs/{id}")).await
    }

    /// Waits until `pred` holds for the job, and returns it.
    pub(crate) async fn wait_job(&self, token: &str, id: u64, what: &str, pred: impl Fn(&JobView) -> bool) -> JobView {
        let deadline = Instant::now() + WAIT;
        loop {
            let j = self.job(token, id).await;
            if pred(&j) {
                return j;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} never became {what}: {j:#?}\n{}",
                self.server_log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) async fn wait_ended(&self, token: &str, id: u64) -> JobView {
        self.wait_job(token, id, "ended", |j| {
            matches!(j.state.as_str(), "succeeded" | "failed" | "cancelled")
        })
        .await
    }

    /// Everything the job printed so far, stdout and stderr interleaved in arrival order.
    pub(crate) async fn logs(&self, token: &str, id: u64) -> String {
        let r: LogsResponse = self.get_ok(token, &format!("/api/v1/jobs/{id}/logs?limit=5000")).await;
        r.lines.iter().map(|l| l.data.as_str()).collect()
    }

    /// Waits until the job's logs contain `needle`.
    pub(crate) async fn wait_logs(&self, token: &str, id: u64, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = self.logs(token, id).await;
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} never printed `{needle}`; it printed:\n{text}\n{}",
                self.server_log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        for mut a in self.agents.drain(..) {
            let _ = a.kill();
            let _ = a.wait();
        }
        if let Some(mut s) = self.server.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

/// A manifest with the given fields filled in.
pub(crate) fn manifest(name: &str, kind: &str, resources: &str, tier: &str, price: &str, script: &str) -> String {
    format!(
        "name: {name}\nkind: {kind}\nresources:\n{resources}\ntier: {tier}\nmax_price_per_gpu_hour: {price}\nduration: 10m\ncommand: sh\nargs:\n  - -c\n  - {}\n",
        serde_json::to_string(script).unwrap()
    )
}
