//! The agent's configuration: which server to talk to, as whom, and what this
//! machine offers when no driver can tell (the declared inventory).
//!
//! The YAML file is parsed strictly (an unknown field is an error that names it)
//! into a raw shape, then validated into [`AgentConfig`], so that a bad model or
//! price is reported with the node it belongs to. `agora up` builds the same
//! struct in-process with [`AgentConfig::single_node`].

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agora_types::{GpuModel, Micros, ParseMoneyError, UnknownGpuModel};
use serde::Deserialize;

/// Bound of the per-agent buffer of unsent process output (see
/// [`crate::process::LogBuffer`]): 8 MiB, enough for minutes of chatty
/// training logs while the server is unreachable, small enough for any host.
pub const DEFAULT_LOG_BUFFER_BYTES: usize = 8 * 1024 * 1024;

/// Environment variable that gives the provider token when the config does not.
pub const TOKEN_ENV: &str = "AGORA_TOKEN";

/// Where the inventory comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InventoryMode {
    /// NVML if a driver answers, else the declared nodes.
    #[default]
    Auto,
    /// Only the declared nodes; NVML is never loaded.
    Declared,
    /// Only NVML; no driver is an error.
    Nvml,
}

/// One node as the configuration declares it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSpec {
    /// Unique within the agent.
    pub name: String,
    pub gpu_model: GpuModel,
    pub gpus: NonZeroU32,
    /// Host name or address gang peers use to reach this node (`MASTER_ADDR`).
    pub address: String,
    /// The ask.
    pub price_micros_per_gpu_hour: Micros,
    /// The name of one of the config's `sites`; None for the provider's default site.
    pub site: Option<String>,
    /// The fabric domain's name; None for one domain per agent.
    pub fabric_domain: Option<String>,
}

/// Knobs that are not part of the YAML file; the defaults suit production and
/// tests shrink them.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentTuning {
    /// Bound of the unsent output buffer, in bytes of output.
    pub log_buffer_bytes: usize,
    /// How long parts get between SIGTERM and SIGKILL when the agent shuts down.
    /// Capped at 10 s whatever the value, so shutdown never hangs.
    pub shutdown_grace: Duration,
    /// Minimum gap between two heartbeats: prompt heartbeats after a start or an
    /// exit never exceed 1 / this rate.
    pub min_heartbeat_gap: Duration,
    /// Longest wait between two attempts when the server does not answer.
    pub max_retry_backoff: Duration,
    /// Timeout of one HTTP request to the server.
    pub request_timeout: Duration,
}

impl Default for AgentTuning {
    fn default() -> Self {
        AgentTuning {
            log_buffer_bytes: DEFAULT_LOG_BUFFER_BYTES,
            shutdown_grace: Duration::from_secs(10),
            min_heartbeat_gap: Duration::from_millis(50),
            max_retry_backoff: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
        }
    }
}

/// Everything the agent needs to run.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentConfig {
    /// Base URL of the server, e.g. `http://127.0.0.1:7070` (no trailing slash).
    pub server: String,
    /// Provider token; when absent, [`AgentConfig::resolve_token`] reads `AGORA_TOKEN`.
    pub token: Option<String>,
    /// Stable agent name within the provider: re-registering with it after a
    /// restart of either side yields the same agent id.
    pub name: String,
    /// Reserved for adopting processes across agent restarts (a later issue);
    /// nothing is written there yet.
    pub state_dir: Option<PathBuf>,
    pub inventory: InventoryMode,
    /// Sites the nodes are in (power budgets, regions).
    pub sites: Vec<agora_proto::agent::SiteReport>,
    /// The declared inventory; with NVML, the first node gives this machine's
    /// name, address and ask.
    pub nodes: Vec<NodeSpec>,
    pub tuning: AgentTuning,
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read agent config {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("invalid agent config {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("server `{0}` must be an http:// or https:// URL")]
    BadServer(String),
    #[error("agent name must not be empty")]
    EmptyName,
    #[error("node `{node}`: {error}")]
    UnknownModel { node: String, error: UnknownGpuModel },
    #[error("node `{node}`: bad price_per_gpu_hour: {error}")]
    BadPrice { node: String, error: ParseMoneyError },
    #[error("node `{node}`: price_per_gpu_hour must not be negative, got {price}")]
    NegativePrice { node: String, price: Micros },
    #[error("node `{node}`: gpus must be at least 1")]
    ZeroGpus { node: String },
    #[error("node `{node}`: {field} must not be empty")]
    EmptyField { node: String, field: &'static str },
    #[error("node name `{0}` is declared twice")]
    DuplicateNode(String),
    #[error("site `{0}`: {1}")]
    BadWindows(String, String),
    #[error("node `{node}`: site `{site}` is not one of the config's sites")]
    UnknownSite { node: String, site: String },
    #[error("site `{0}` is declared twice, or has an empty name or region")]
    BadSite(String),
    #[error("no provider token: set `token` in the agent config or the {TOKEN_ENV} environment variable")]
    NoToken,
}

/// The file as written; validated into [`AgentConfig`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: String,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    state_dir: Option<PathBuf>,
    #[serde(default)]
    inventory: InventoryMode,
    #[serde(default)]
    sites: Vec<agora_proto::agent::SiteReport>,
    #[serde(default)]
    nodes: Vec<RawNode>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: String,
    gpu_model: String,
    gpus: u32,
    /// Defaults to this machine's host name.
    #[serde(default)]
    address: Option<String>,
    price_per_gpu_hour: PriceText,
    #[serde(default)]
    site: Option<String>,
    #[serde(default)]
    fabric_domain: Option<String>,
}

/// A decimal amount written as a YAML string (`"2.50"`) or number (`2.50`).
/// Numbers go through their shortest decimal rendering, so `2.5` means exactly
/// 2.5 and `1e-7` is refused as too precise rather than rounded.
struct PriceText(String);

impl<'de> Deserialize<'de> for PriceText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = PriceText;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a decimal price such as \"2.50\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PriceText, E> {
                Ok(PriceText(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<PriceText, E> {
                Ok(PriceText(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<PriceText, E> {
                Ok(PriceText(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<PriceText, E> {
                Ok(PriceText(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl AgentConfig {
    /// One node of `gpus` GPUs of `gpu_model` at `price`, reachable on 127.0.0.1:
    /// what `agora up` runs in-process. Inventory is declared (no NVML probe).
    pub fn single_node(
        server: impl Into<String>,
        token: Option<String>,
        name: impl Into<String>,
        gpu_model: GpuModel,
        gpus: NonZeroU32,
        price_micros_per_gpu_hour: Micros,
    ) -> AgentConfig {
        AgentConfig {
            server: trim_server(server.into()),
            token,
            name: name.into(),
            state_dir: None,
            inventory: InventoryMode::Declared,
            sites: Vec::new(),
            nodes: vec![NodeSpec {
                name: "node-0".to_string(),
                gpu_model,
                gpus,
                address: "127.0.0.1".to_string(),
                price_micros_per_gpu_hour,
                site: None,
                fabric_domain: None,
            }],
            tuning: AgentTuning::default(),
        }
    }

    pub fn from_yaml_file(path: impl AsRef<Path>) -> Result<AgentConfig, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn from_yaml_str(text: &str) -> Result<AgentConfig, ConfigError> {
        Self::parse(text, "<string>")
    }

    fn parse(text: &str, origin: &str) -> Result<AgentConfig, ConfigError> {
        let raw: RawConfig = serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        let server = trim_server(raw.server);
        if !(server.starts_with("http://") || server.starts_with("https://")) {
            return Err(ConfigError::BadServer(server));
        }
        let name = match raw.name {
            Some(n) => n.trim().to_string(),
            None => host_name(),
        };
        if name.is_empty() {
            return Err(ConfigError::EmptyName);
        }
        let mut site_names = std::collections::BTreeSet::new();
        for site in &raw.sites {
            if site.name.trim().is_empty() || site.region.trim().is_empty() || !site_names.insert(site.name.as_str()) {
                return Err(ConfigError::BadSite(site.name.clone()));
            }
            site.check_windows()
                .map_err(|reason| ConfigError::BadWindows(site.name.clone(), reason))?;
        }
        let mut nodes: Vec<NodeSpec> = Vec::with_capacity(raw.nodes.len());
        for n in raw.nodes {
            let node = validate_node(n)?;
            if nodes.iter().any(|other| other.name == node.name) {
                return Err(ConfigError::DuplicateNode(node.name));
            }
            if let Some(site) = &node.site
                && !site_names.contains(site.as_str())
            {
                return Err(ConfigError::UnknownSite {
                    node: node.name,
                    site: site.clone(),
                });
            }
            nodes.push(node);
        }
        Ok(AgentConfig {
            server,
            token: raw.token.filter(|t| !t.trim().is_empty()),
            name,
            state_dir: raw.state_dir,
            inventory: raw.inventory,
            sites: raw.sites,
            nodes,
            tuning: AgentTuning::default(),
        })
    }

    /// The token from the config, else from `AGORA_TOKEN`.
    pub fn resolve_token(&self) -> Result<String, ConfigError> {
        if let Some(t) = &self.token {
            return Ok(t.clone());
        }
        match std::env::var(TOKEN_ENV) {
            Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
            _ => Err(ConfigError::NoToken),
        }
    }
}

fn validate_node(n: RawNode) -> Result<NodeSpec, ConfigError> {
    let node = n.name.trim().to_string();
    if node.is_empty() {
        return Err(ConfigError::EmptyField { node, field: "name" });
    }
    let gpu_model = GpuModel::resolve(&n.gpu_model).map_err(|error| ConfigError::UnknownModel {
        node: node.clone(),
        error,
    })?;
    let gpus = NonZeroU32::new(n.gpus).ok_or_else(|| ConfigError::ZeroGpus { node: node.clone() })?;
    let price = Micros::parse_decimal(&n.price_per_gpu_hour.0).map_err(|error| ConfigError::BadPrice {
        node: node.clone(),
        error,
    })?;
    if price.is_negative() {
        return Err(ConfigError::NegativePrice { node, price });
    }
    let address = match n.address {
        Some(a) if a.trim().is_empty() => {
            return Err(ConfigError::EmptyField { node, field: "address" });
        }
        Some(a) => a.trim().to_string(),
        None => host_name(),
    };
    Ok(NodeSpec {
        name: node,
        gpu_model,
        gpus,
        address,
        price_micros_per_gpu_hour: price,
        site: n.site.map(|s| s.trim().to_string()),
        fabric_domain: n.fabric_domain.map(|d| d.trim().to_string()).filter(|d| !d.is_empty()),
    })
}

fn trim_server(server: String) -> String {
    server.trim().trim_end_matches('/').to_string()
}

/// This machine's host name: the default agent name and node address.
/// Falls back to `localhost` where the kernel will not say, so a config
/// without a name still loads.
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
server: http://127.0.0.1:7070/
token: agora_secret
name: gpu-box-1
state_dir: ./agora-agent
inventory: declared
nodes:
  - name: node-0
    gpu_model: H100-80GB-SXM
    gpus: 8
    address: 10.0.0.5
    price_per_gpu_hour: "2.50"
  - name: node-1
    gpu_model: nvidia-h100
    gpus: 4
    address: 10.0.0.6
    price_per_gpu_hour: 1.75
  - name: node-2
    gpu_model: rtx4090
    gpus: 1
    price_per_gpu_hour: 1
"#;

    fn parse_err(yaml: &str) -> String {
        AgentConfig::from_yaml_str(yaml).unwrap_err().to_string()
    }

    #[test]
    fn good_file_parses_with_aliases_and_both_price_forms() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.yaml");
        std::fs::write(&path, GOOD).unwrap();
        let c = AgentConfig::from_yaml_file(&path).unwrap();
        assert_eq!(c.server, "http://127.0.0.1:7070", "trailing slash trimmed");
        assert_eq!(c.token.as_deref(), Some("agora_secret"));
        assert_eq!(c.name, "gpu-box-1");
        assert_eq!(c.state_dir, Some(PathBuf::from("./agora-agent")));
        assert_eq!(c.inventory, InventoryMode::Declared);
        assert_eq!(c.nodes.len(), 3);
        assert_eq!(c.nodes[0].gpu_model.name(), "H100-80GB-SXM");
        assert_eq!(c.nodes[0].gpus.get(), 8);
        assert_eq!(c.nodes[0].address, "10.0.0.5");
        assert_eq!(c.nodes[0].price_micros_per_gpu_hour, Micros(2_500_000));
        assert_eq!(c.nodes[1].gpu_model.name(), "H100-80GB-SXM");
        assert_eq!(c.nodes[1].price_micros_per_gpu_hour, Micros(1_750_000));
        assert_eq!(c.nodes[2].gpu_model.name(), "RTX-4090");
        assert_eq!(c.nodes[2].price_micros_per_gpu_hour, Micros(1_000_000));
        assert_eq!(c.nodes[2].address, host_name(), "address defaults to the host name");
        assert_eq!(c.tuning, AgentTuning::default());
    }

    #[test]
    fn orbital_sites_declare_their_windows() {
        let text = "server: http://h:1\nsites:\n  - name: leo\n    region: leo\n    kind: orbital\n    windows:\n      - {start_ms: 1000, end_ms: 2000}\n      - {start_ms: 3000, end_ms: 4000}\nnodes:\n  - name: a\n    gpu_model: h100\n    gpus: 8\n    price_per_gpu_hour: 2\n    site: leo\n";
        let c = AgentConfig::from_yaml_str(text).unwrap();
        assert_eq!(c.sites[0].kind, agora_proto::agent::SiteKind::Orbital);
        assert_eq!(c.sites[0].windows.len(), 2);
        let overlapping = text.replace("start_ms: 3000", "start_ms: 1500");
        assert!(
            parse_err(&overlapping).contains("window 1 overlaps"),
            "{}",
            parse_err(&overlapping)
        );
        let backwards = text.replace("end_ms: 2000", "end_ms: 500");
        assert!(parse_err(&backwards).contains("window 0 ends before it starts"));
        let out_of_range = text.replace("start_ms: 1000", "start_ms: -5");
        assert!(
            parse_err(&out_of_range).contains("outside"),
            "{}",
            parse_err(&out_of_range)
        );
        let none = text.replace(
            "    windows:\n      - {start_ms: 1000, end_ms: 2000}\n      - {start_ms: 3000, end_ms: 4000}\n",
            "",
        );
        assert!(parse_err(&none).contains("needs at least one availability window"));
        let terrestrial = text.replace("kind: orbital", "kind: terrestrial");
        assert!(parse_err(&terrestrial).contains("windows are for orbital sites"));
    }

    #[test]
    fn sites_and_fabric_domains_are_declared_and_checked() {
        let text = "server: http://h:1\nsites:\n  - name: dc1\n    region: us-east\n    power_budget_kw: 500\n    node_overhead_w: 1200\nnodes:\n  - name: a\n    gpu_model: h100\n    gpus: 8\n    price_per_gpu_hour: 2\n    site: dc1\n    fabric_domain: su-1\n";
        let c = AgentConfig::from_yaml_str(text).unwrap();
        assert_eq!(c.sites[0].power_budget_kw, Some(500));
        assert_eq!(c.sites[0].node_overhead_w, 1200);
        assert_eq!(
            (c.nodes[0].site.as_deref(), c.nodes[0].fabric_domain.as_deref()),
            (Some("dc1"), Some("su-1"))
        );
        let err = parse_err(&text.replace("site: dc1", "site: dc2"));
        assert!(err.contains("site `dc2` is not one of the config's sites"), "{err}");
        let err = parse_err(&text.replace("    region: us-east\n", ""));
        assert!(err.contains("region"), "{err}");
    }

    #[test]
    fn defaults_apply_to_a_minimal_file() {
        let c = AgentConfig::from_yaml_str("server: http://h:1\n").unwrap();
        assert_eq!(c.inventory, InventoryMode::Auto);
        assert_eq!(c.name, host_name());
        assert!(c.nodes.is_empty());
        assert_eq!(c.token, None);
    }

    #[test]
    fn unknown_field_is_rejected_by_name() {
        let err = parse_err("server: http://h:1\ntokne: x\n");
        assert!(err.contains("tokne"), "{err}");
        let err = parse_err(
            "server: http://h:1\nnodes:\n  - name: a\n    gpu_model: h100\n    gpus: 1\n    price_per_gpu_hour: 1\n    vram: 80\n",
        );
        assert!(err.contains("vram"), "{err}");
    }

    #[test]
    fn bad_model_names_the_node_and_close_matches() {
        let err = parse_err(
            "server: http://h:1\nnodes:\n  - name: box\n    gpu_model: h10\n    gpus: 1\n    price_per_gpu_hour: 1\n",
        );
        assert!(err.starts_with("node `box`: unknown GPU model `h10`"), "{err}");
        assert!(err.contains("did you mean") && err.contains("H100-80GB-SXM"), "{err}");
    }

    #[test]
    fn bad_prices_are_refused() {
        let node = |price: &str| {
            format!(
                "server: http://h:1\nnodes:\n  - name: box\n    gpu_model: h100\n    gpus: 1\n    price_per_gpu_hour: {price}\n"
            )
        };
        let err = parse_err(&node("\"two\""));
        assert!(
            err.contains("node `box`: bad price_per_gpu_hour") && err.contains("`two`"),
            "{err}"
        );
        let err = parse_err(&node("\"0.0000001\""));
        assert!(err.contains("more than 6 decimals"), "{err}");
        let err = parse_err(&node("\"-1\""));
        assert!(err.contains("must not be negative"), "{err}");
        let err = parse_err(&node("[1]"));
        assert!(err.contains("price"), "{err}");
    }

    #[test]
    fn other_validation_errors() {
        let node = |name: &str, gpus: u32| {
            format!("  - name: {name}\n    gpu_model: h100\n    gpus: {gpus}\n    price_per_gpu_hour: 1\n")
        };
        let err = parse_err(&format!("server: http://h:1\nnodes:\n{}", node("a", 0)));
        assert_eq!(err, "node `a`: gpus must be at least 1");
        let err = parse_err(&format!("server: http://h:1\nnodes:\n{}{}", node("a", 1), node("a", 2)));
        assert_eq!(err, "node name `a` is declared twice");
        let err = parse_err("server: 127.0.0.1:7070\n");
        assert!(err.contains("must be an http"), "{err}");
        let err = parse_err("server: http://h:1\ninventory: magic\n");
        assert!(err.contains("magic"), "{err}");
    }

    #[test]
    fn single_node_builds_a_declared_config() {
        let model = GpuModel::resolve("h100").unwrap();
        let c = AgentConfig::single_node(
            "http://127.0.0.1:7070/",
            Some("t".into()),
            "local",
            model,
            NonZeroU32::new(2).unwrap(),
            Micros(2_000_000),
        );
        assert_eq!(c.server, "http://127.0.0.1:7070");
        assert_eq!(c.inventory, InventoryMode::Declared);
        assert_eq!(c.nodes[0].address, "127.0.0.1");
        assert_eq!(c.resolve_token().unwrap(), "t");
    }
}
