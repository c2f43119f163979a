//! The job manifest: the YAML document a tenant writes, parsed strictly into the
//! canonical [`Manifest`] the server validates and stores in its event log.
//!
//! API boundary: the JSON form of [`Manifest`] (field names as below) is the stable
//! wire and storage format; the YAML surface is what people type and may grow.
//!
//! # The YAML surface
//!
//! ```yaml
//! name: hello-gpus              # required; 1..=64 chars of [A-Za-z0-9._-]
//! kind: training                # training | batch | service (service: not yet supported)
//! resources:
//!   gpus_per_node: 2            # required; 1..=64
//!   nodes: 1                    # training only; default 1; 1..=4096
//!   # tasks: 10                 # batch only; default 1; 1..=10000
//!   gpu_models: [h100, H200]    # optional; names or aliases of the GPU catalog; absent or [] = any
//!   min_vram_gb: 40             # optional; GiB per GPU; 0..=4096; default 0 (no minimum)
//!   cross_provider:             # optional; training gangs (nodes > 1) only, not reserved: the gang may
//!     max_latency_ms: 20        #   span providers whose regions are pairwise ≤ this apart (1..=1000)
//! tier: on-demand               # reserved | on-demand | spot; default on-demand
//! max_price_per_gpu_hour: 3.00  # required except for reserved; decimal (number or string); > 0, ≤ 1000000, ≤ 6 decimals
//! duration: 1h30m               # optional estimate: seconds (5400) or "90s", "30m", "2h", "1h30m", "1d"
//! command: bash                 # required; non-empty; ≤ 4096 bytes
//! args: ["-c", "echo $CUDA_VISIBLE_DEVICES"]   # optional; ≤ 1024 items of ≤ 64 KiB
//! env: {FOO: bar, EPOCHS: 3}    # optional; ≤ 256 variables; values ≤ 64 KiB
//! workdir: /tmp                 # optional; non-empty; ≤ 4096 bytes
//! checkpointable: true          # optional; default false; the job survives a stop and restart (orbital sites take only such work)
//! ```
//!
//! Rules beyond the comments above:
//!
//! - The document is one YAML mapping of at most [`MAX_MANIFEST_BYTES`]; an empty
//!   document, several documents, or another top-level value is an error, and so is
//!   nesting deeper than 16 levels or a document that expands (through aliases) to
//!   more than 20,000 values or 1 MiB of text.
//! - Unknown fields are errors (with the valid fields, and the closest one); so is a
//!   field given twice, `nodes` on a batch job and `tasks` on a training job.
//! - An optional field written as `~`, `null` or nothing is treated as absent; a
//!   required field, a list item or an `env` value written so is an error.
//! - Text fields (`name`, `command`, `workdir`, `args` items, `env` values,
//!   `gpu_models` items) take any scalar: a YAML number or boolean counts as the text
//!   written (`EPOCHS: 3` is `"3"`, `VERSION: 1.10` is `"1.10"`). Text must not
//!   contain NUL bytes (they cannot reach a process).
//! - Counts (`gpus_per_node`, `nodes`, `tasks`, `min_vram_gb`) must be YAML integers.
//! - `max_price_per_gpu_hour` is exact: `3.00`, `"3.00"` and `3` are the same price;
//!   `1e3`, `.inf` or a seventh decimal are errors, never rounded.
//! - `duration`: a YAML integer or digit string is seconds; otherwise one or more
//!   `<integer><unit>` with units `d`, `h`, `m`, `s`, each at most once, largest first,
//!   no spaces. It must be > 0 and ≤ 365 days.
//! - `gpu_models` resolves through [`GpuModel::resolve`] (case-insensitive, aliases);
//!   the same model listed twice (even through two aliases) is an error. With
//!   `min_vram_gb`, at least one acceptable model must have that much memory.
//! - `env` names match `[A-Za-z_][A-Za-z0-9_]*` (≤ 256 bytes), do not start with
//!   `AGORA_` and are not one of [`RESERVED_ENV_VARS`]: the exchange sets those.
//! - `kind: service` parses, but [`Manifest::validate`] refuses it for now.
//!
//! Every error names the field as a dotted path (`resources.gpus_per_node`,
//! `args[2]`, `env.FOO`) when there is one, and the 1-based line when the YAML gives
//! it: the line of the field's key, of the list item, or of the enclosing field
//! for a missing one.
//!
//! ```
//! use agora_proto::Manifest;
//!
//! let m = Manifest::from_yaml(
//!     "name: hello\nkind: batch\nresources: {gpus_per_node: 1, tasks: 4}\n\
//!      max_price_per_gpu_hour: 2.5\ncommand: ./run.sh\n",
//! )
//! .unwrap();
//! assert_eq!(m.total_gpus(), 4);
//!
//! let err = Manifest::from_yaml("name: hello\nkind: batch\nresources:\n  gpus_per_node: 0\n").unwrap_err();
//! assert_eq!(err.to_string(), "line 4: resources.gpus_per_node: must be between 1 and 64");
//! ```

mod lower;
mod tree;

pub use lower::parse_duration;

use std::collections::BTreeMap;

use agora_types::{GpuModel, JobKind, Micros, PricePerGpuHour, Tier};
use serde::{Deserialize, Serialize};

/// The largest manifest document accepted, in bytes.
pub const MAX_MANIFEST_BYTES: usize = 256 * 1024;

/// Environment variables the exchange sets for every job part; a manifest may not
/// set them (nor any `AGORA_*` variable), so a job always sees the GPUs and rank
/// layout it was actually given.
pub const RESERVED_ENV_VARS: &[&str] = &[
    "CUDA_VISIBLE_DEVICES",
    "MASTER_ADDR",
    "MASTER_PORT",
    "WORLD_SIZE",
    "RANK",
    "NODE_RANK",
    "LOCAL_WORLD_SIZE",
    "LOCAL_RANK",
];

/// Prefix of the variables the exchange reserves for itself.
pub const RESERVED_ENV_PREFIX: &str = "AGORA_";

// Limits, shared by the YAML lowering and `validate` so both say the same thing.
const NAME_MAX_CHARS: usize = 64;
const GPUS_PER_NODE: (u32, u32) = (1, 64);
const NODES: (u32, u32) = (1, 4096);
const TASKS: (u32, u32) = (1, 10_000);
const MIN_VRAM_GIB_MAX: u32 = 4096;
const MAX_LATENCY_MS: (u32, u32) = (1, 1000);
const MIB_PER_GIB: u32 = 1024;
const PRICE_MAX_UNITS: i64 = 1_000_000;
const DURATION_MAX_S: u64 = 365 * 86_400;
const COMMAND_MAX_BYTES: usize = 4096;
const WORKDIR_MAX_BYTES: usize = 4096;
const ARGS_MAX_ITEMS: usize = 1024;
const ARG_MAX_BYTES: usize = 64 * 1024;
const ENV_MAX_ENTRIES: usize = 256;
const ENV_NAME_MAX_BYTES: usize = 256;
const ENV_VALUE_MAX_BYTES: usize = 64 * 1024;

/// A job as the exchange stores it: parsed, defaults filled in, GPU models resolved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub kind: JobKind,
    pub resources: Resources,
    #[serde(default = "default_tier")]
    pub tier: Tier,
    /// The most the tenant pays per GPU-hour; the market never charges more.
    pub max_price_per_gpu_hour: PricePerGpuHour,
    /// The tenant's estimate of the run time, used to reserve funds; not a limit.
    #[serde(default)]
    pub duration_estimate_s: Option<u64>,
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// A BTreeMap so the stored form (and the order variables are set) is canonical.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub workdir: Option<String>,
    /// The job saves its progress and resumes after a stop: orbital sites,
    /// which stop work before each availability window closes, take only such work.
    /// Left out of the canonical form when false, so older manifests keep theirs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub checkpointable: bool,
}

/// What a job asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    pub gpus_per_node: u32,
    /// Nodes of a training gang; always 1 for other kinds.
    #[serde(default = "one")]
    pub nodes: u32,
    /// Independent tasks of a batch job; always 1 for other kinds.
    #[serde(default = "one")]
    pub tasks: u32,
    /// Acceptable models, in the tenant's order, without duplicates; empty means any.
    #[serde(default)]
    pub gpu_models: Vec<GpuModel>,
    /// Minimum memory per GPU; 0 means no minimum.
    #[serde(default)]
    pub min_vram_mib: u32,
    /// A gang that may span providers when no single one holds it, across
    /// regions pairwise at most this far apart (the exchange's latency
    /// matrix). None: one provider (YAML: `cross_provider.max_latency_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_provider_max_latency_ms: Option<u32>,
}

fn default_tier() -> Tier {
    Tier::OnDemand
}

fn one() -> u32 {
    1
}

/// Why a manifest was refused: which field, on which line, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{}", render(.field, .line, .message))]
pub struct ManifestError {
    /// Dotted path of the offending field (`resources.gpus_per_node`, `args[2]`,
    /// `env.FOO`); `None` for errors about the whole document.
    pub field: Option<String>,
    /// 1-based line in the YAML document; `None` when there is no document (a JSON
    /// manifest) or no single place to point at.
    pub line: Option<u32>,
    pub message: String,
}

fn render(field: &Option<String>, line: &Option<u32>, message: &str) -> String {
    let mut out = String::new();
    if let Some(line) = line {
        out.push_str(&format!("line {line}: "));
    }
    if let Some(field) = field {
        out.push_str(field);
        out.push_str(": ");
    }
    out.push_str(message);
    out
}

impl ManifestError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> ManifestError {
        ManifestError {
            field: Some(field.into()),
            line: None,
            message: message.into(),
        }
    }

    fn document(line: Option<u32>, message: impl Into<String>) -> ManifestError {
        ManifestError {
            field: None,
            line,
            message: message.into(),
        }
    }

    fn at(mut self, line: Option<u32>) -> ManifestError {
        self.line = line;
        self
    }
}

impl Manifest {
    /// Parses a YAML manifest strictly and validates it.
    pub fn from_yaml(text: &str) -> Result<Manifest, ManifestError> {
        if text.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::document(
                None,
                format!(
                    "the manifest is {} bytes; the limit is {MAX_MANIFEST_BYTES} bytes",
                    text.len()
                ),
            ));
        }
        let doc = tree::parse(text)?;
        let (manifest, lines) = lower::lower(&doc)?;
        manifest.validate().map_err(|err| lines.locate(err))?;
        Ok(manifest)
    }

    /// Checks every rule a stored manifest must satisfy. [`Manifest::from_yaml`]
    /// calls it; call it yourself on a manifest that arrived as JSON. Field paths
    /// name the canonical fields (`resources.min_vram_mib`, `duration_estimate_s`).
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.kind == JobKind::Service {
            return Err(ManifestError::new("kind", "service workloads are not yet supported"));
        }
        check_name(&self.name)?;
        self.validate_resources()?;
        let price = self.max_price_per_gpu_hour.0;
        // Reserved work is paid for by its contract: a zero bid is fine there.
        if !(self.tier == Tier::Reserved && price == Micros::ZERO) {
            check_price(price).map_err(|m| ManifestError::new("max_price_per_gpu_hour", m))?;
        }
        if let Some(seconds) = self.duration_estimate_s {
            check_duration(seconds).map_err(|m| ManifestError::new("duration_estimate_s", m))?;
        }
        check_text(&self.command, COMMAND_MAX_BYTES).map_err(|m| ManifestError::new("command", m))?;
        if self.args.len() > ARGS_MAX_ITEMS {
            return Err(ManifestError::new(
                "args",
                format!("has {} items; at most {ARGS_MAX_ITEMS} are allowed", self.args.len()),
            ));
        }
        for (i, arg) in self.args.iter().enumerate() {
            check_bytes(arg, ARG_MAX_BYTES).map_err(|m| ManifestError::new(format!("args[{i}]"), m))?;
        }
        if self.env.len() > ENV_MAX_ENTRIES {
            return Err(ManifestError::new(
                "env",
                format!(
                    "has {} variables; at most {ENV_MAX_ENTRIES} are allowed",
                    self.env.len()
                ),
            ));
        }
        for (key, value) in &self.env {
            check_env_name(key).map_err(|m| ManifestError::new("env", m))?;
            check_env_not_reserved(key).map_err(|m| ManifestError::new(format!("env.{key}"), m))?;
            check_bytes(value, ENV_VALUE_MAX_BYTES).map_err(|m| ManifestError::new(format!("env.{key}"), m))?;
        }
        if let Some(workdir) = &self.workdir {
            check_text(workdir, WORKDIR_MAX_BYTES).map_err(|m| ManifestError::new("workdir", m))?;
        }
        Ok(())
    }

    fn validate_resources(&self) -> Result<(), ManifestError> {
        let r = &self.resources;
        check_range(r.gpus_per_node, GPUS_PER_NODE).map_err(|m| ManifestError::new("resources.gpus_per_node", m))?;
        match self.kind {
            JobKind::Training => {
                check_range(r.nodes, NODES).map_err(|m| ManifestError::new("resources.nodes", m))?;
                if r.tasks != 1 {
                    return Err(ManifestError::new("resources.tasks", "only applies to batch jobs"));
                }
            }
            JobKind::Batch => {
                check_range(r.tasks, TASKS).map_err(|m| ManifestError::new("resources.tasks", m))?;
                if r.nodes != 1 {
                    return Err(ManifestError::new("resources.nodes", "only applies to training jobs"));
                }
            }
            JobKind::Service => {}
        }
        let mut listed = std::collections::BTreeSet::new();
        for (i, model) in r.gpu_models.iter().enumerate() {
            if !listed.insert(model) {
                return Err(ManifestError::new(
                    format!("resources.gpu_models[{i}]"),
                    format!("{model} is listed twice"),
                ));
            }
        }
        check_min_vram_mib(r.min_vram_mib, &r.gpu_models)
            .map_err(|m| ManifestError::new("resources.min_vram_mib", m))?;
        if let Some(ms) = r.cross_provider_max_latency_ms {
            let err = |m: &str| Err(ManifestError::new("resources.cross_provider_max_latency_ms", m));
            if self.kind != JobKind::Training || r.nodes < 2 {
                return err("only applies to training gangs (nodes > 1): a single node never spans providers");
            }
            if self.tier == Tier::Reserved {
                return err(
                    "reserved work runs on its reservation's provider; use on-demand or spot to span providers",
                );
            }
            check_range(ms, MAX_LATENCY_MS)
                .map_err(|m| ManifestError::new("resources.cross_provider_max_latency_ms", m))?;
        }
        Ok(())
    }

    /// GPUs the whole job holds when fully placed: `gpus_per_node` × `nodes` for
    /// training, × `tasks` for batch (saturating, so an unvalidated manifest cannot
    /// overflow).
    pub fn total_gpus(&self) -> u32 {
        let r = &self.resources;
        match self.kind {
            JobKind::Training => r.gpus_per_node.saturating_mul(r.nodes),
            JobKind::Batch => r.gpus_per_node.saturating_mul(r.tasks),
            JobKind::Service => r.gpus_per_node,
        }
    }
}

fn check_name(name: &str) -> Result<(), ManifestError> {
    let err = |m: String| Err(ManifestError::new("name", m));
    if name.is_empty() {
        return err("must not be empty".into());
    }
    if name.chars().count() > NAME_MAX_CHARS {
        return err(format!("must be at most {NAME_MAX_CHARS} characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return err(format!(
            "`{}` is not allowed; use letters, digits, `.`, `_` and `-`",
            c.escape_debug()
        ));
    }
    Ok(())
}

fn check_range(value: u32, (min, max): (u32, u32)) -> Result<(), String> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(between(min, max))
    }
}

fn between(min: u32, max: u32) -> String {
    format!("must be between {min} and {max}")
}

fn check_min_vram_mib(min_vram_mib: u32, models: &[GpuModel]) -> Result<(), String> {
    if min_vram_mib == 0 {
        return Ok(());
    }
    if min_vram_mib > MIN_VRAM_GIB_MAX * MIB_PER_GIB {
        return Err(format!("must be at most {MIN_VRAM_GIB_MAX} GiB"));
    }
    let candidates: Vec<GpuModel> = if models.is_empty() {
        GpuModel::all().collect()
    } else {
        models.to_vec()
    };
    if candidates.iter().any(|m| m.spec().vram_mib >= min_vram_mib) {
        return Ok(());
    }
    let largest = candidates.iter().max_by_key(|m| m.spec().vram_mib);
    let which = if models.is_empty() {
        "no GPU model of the catalog"
    } else {
        "no model of resources.gpu_models"
    };
    Err(match largest {
        Some(m) => format!(
            "{which} has {} GiB (largest: {m} with {} GiB)",
            gib(min_vram_mib),
            gib(m.spec().vram_mib)
        ),
        None => format!("{which} has {} GiB", gib(min_vram_mib)),
    })
}

/// MiB as GiB for messages, with up to two decimals.
fn gib(mib: u32) -> String {
    let hundredths = u64::from(mib) * 100 / u64::from(MIB_PER_GIB);
    let (whole, frac) = (hundredths / 100, hundredths % 100);
    if frac == 0 {
        whole.to_string()
    } else {
        format!("{whole}.{frac:02}")
    }
}

fn check_price(price: Micros) -> Result<(), String> {
    if price.0 <= 0 {
        return Err("must be greater than 0".into());
    }
    if price > Micros::from_units(PRICE_MAX_UNITS) {
        return Err(format!("must be at most {}", Micros::from_units(PRICE_MAX_UNITS)));
    }
    Ok(())
}

fn check_duration(seconds: u64) -> Result<(), String> {
    if seconds == 0 {
        return Err("must be greater than 0".into());
    }
    if seconds > DURATION_MAX_S {
        return Err("must be at most 365 days".into());
    }
    Ok(())
}

/// Non-blank text of bounded size without NUL.
fn check_text(text: &str, max_bytes: usize) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err("must not be empty".into());
    }
    check_bytes(text, max_bytes)
}

fn check_bytes(text: &str, max_bytes: usize) -> Result<(), String> {
    if text.len() > max_bytes {
        return Err(format!("is {} bytes; at most {max_bytes} are allowed", text.len()));
    }
    if text.contains('\0') {
        return Err("must not contain NUL bytes".into());
    }
    Ok(())
}

fn check_env_name(name: &str) -> Result<(), String> {
    let shown = shown(name);
    let mut chars = name.chars();
    let valid_start = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !valid_start || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "`{shown}` is not a valid variable name: use [A-Za-z_][A-Za-z0-9_]*"
        ));
    }
    if name.len() > ENV_NAME_MAX_BYTES {
        return Err(format!("`{shown}` is longer than {ENV_NAME_MAX_BYTES} bytes"));
    }
    Ok(())
}

/// Called on a name [`check_env_name`] accepted, so the name is safe to print whole.
fn check_env_not_reserved(name: &str) -> Result<(), String> {
    if name.starts_with(RESERVED_ENV_PREFIX) {
        return Err(format!(
            "`{name}` is reserved: the exchange sets {RESERVED_ENV_PREFIX}* variables"
        ));
    }
    if RESERVED_ENV_VARS.contains(&name) {
        return Err(format!("`{name}` is reserved: the exchange sets it for every job"));
    }
    Ok(())
}

/// User text as shown inside a message: escaped, and cut so a huge value cannot
/// make a huge error.
fn shown(text: &str) -> String {
    const MAX_CHARS: usize = 64;
    let mut out = String::new();
    for c in text.chars().take(MAX_CHARS) {
        match c {
            // Printable as is; `escape_debug` would add backslashes before them.
            '\'' | '"' | '\\' => out.push(c),
            c => out.extend(c.escape_debug()),
        }
    }
    if text.chars().nth(MAX_CHARS).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_display_omits_missing_parts() {
        let full = ManifestError {
            field: Some("a.b".into()),
            line: Some(7),
            message: "bad".into(),
        };
        assert_eq!(full.to_string(), "line 7: a.b: bad");
        assert_eq!(
            ManifestError {
                line: None,
                ..full.clone()
            }
            .to_string(),
            "a.b: bad"
        );
        assert_eq!(
            ManifestError {
                field: None,
                ..full.clone()
            }
            .to_string(),
            "line 7: bad"
        );
        assert_eq!(
            ManifestError {
                field: None,
                line: None,
                ..full
            }
            .to_string(),
            "bad"
        );
    }

    #[test]
    fn gib_prints_exact_hundredths() {
        assert_eq!(gib(40 * 1024), "40");
        assert_eq!(gib(46_068), "44.98");
    }

    #[test]
    fn shown_escapes_and_cuts() {
        assert_eq!(shown("a\nb\u{202e}'\"\\"), "a\\nb\\u{202e}'\"\\");
        assert_eq!(shown(&"x".repeat(100)).chars().count(), 65);
    }

    #[test]
    fn env_names() {
        assert!(check_env_name("FOO_1").is_ok());
        assert!(check_env_name("_x").is_ok());
        assert!(check_env_name("1X").is_err());
        assert!(check_env_name("").is_err());
        assert!(check_env_name("A-B").is_err());
        assert!(check_env_not_reserved("AGORA_JOB").unwrap_err().contains("reserved"));
        assert!(check_env_not_reserved("RANK").unwrap_err().contains("reserved"));
        assert!(check_env_not_reserved("rank").is_ok(), "names are case-sensitive");
    }
}
