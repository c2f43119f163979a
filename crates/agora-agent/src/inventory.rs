//! Inventory discovery: what this agent offers, from NVML when a driver answers
//! or from the configuration's declared nodes.
//!
//! NVML describes the one machine the agent runs on: the GPU model and count come
//! from the driver, while the node's name, address and ask (which no driver knows)
//! come from the first declared node. NVML is loaded at run time by
//! `nvml-wrapper`, so the agent builds and runs on machines without a driver.

use agora_proto::agent::{InventorySource, NodeReport};
use agora_types::{GpuModel, UnknownGpuModel};
use tracing::{info, warn};

use crate::config::{AgentConfig, InventoryMode, NodeSpec, host_name};

/// The nodes an agent registers, and where they came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Inventory {
    pub source: InventorySource,
    pub nodes: Vec<NodeReport>,
}

/// Why no inventory could be formed.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("no NVIDIA driver answered: {0}")]
    NvmlUnavailable(String),
    #[error("NVML reports no GPU on this machine")]
    NoGpus,
    #[error(
        "GPU {index} is a `{name}`, which is not in the catalog ({error}); declare this machine's GPUs under `nodes` with `inventory: declared`"
    )]
    UnknownModel {
        index: u32,
        name: String,
        error: UnknownGpuModel,
    },
    #[error("this machine mixes GPU models ({models}); declare one node per model with `inventory: declared`")]
    MixedModels { models: String },
    #[error(
        "an NVML inventory needs this machine's ask: declare one node under `nodes` with its name, address and price_per_gpu_hour (its model and count are taken from NVML)"
    )]
    NoAsk,
    #[error("`inventory: nvml` describes this one machine, but {0} nodes are declared; use `inventory: declared`")]
    TooManyDeclared(usize),
    #[error("no nodes: declare this machine's GPUs under `nodes`")]
    NoDeclaredNodes,
}

/// Forms the inventory as `config.inventory` asks, logging which source was used.
/// With `auto`, any NVML problem (no driver, unknown model, …) falls back to the
/// declared nodes after a warning that says why.
pub fn discover(config: &AgentConfig) -> Result<Inventory, InventoryError> {
    let inventory = match config.inventory {
        InventoryMode::Declared => declared(&config.nodes)?,
        InventoryMode::Nvml => {
            if config.nodes.len() > 1 {
                return Err(InventoryError::TooManyDeclared(config.nodes.len()));
            }
            from_gpu_names(&nvml_gpu_names()?, config.nodes.first())?
        }
        InventoryMode::Auto if config.nodes.len() > 1 => {
            // One machine is one node: several declared nodes are a deliberate
            // declaration (e.g. a fake multi-node setup), which NVML cannot describe.
            info!(nodes = config.nodes.len(), "several nodes declared: not probing NVML");
            declared(&config.nodes)?
        }
        InventoryMode::Auto => match nvml_gpu_names().and_then(|names| from_gpu_names(&names, config.nodes.first())) {
            Ok(inv) => inv,
            Err(e) => {
                if config.nodes.is_empty() {
                    return Err(e);
                }
                info!(reason = %e, "NVML inventory unavailable, using the declared nodes");
                declared(&config.nodes)?
            }
        },
    };
    for n in &inventory.nodes {
        info!(
            source = ?inventory.source,
            node = %n.name,
            gpu_model = %n.gpu_model,
            gpus = n.gpus,
            address = %n.address,
            ask_per_gpu_hour = %n.ask_micros_per_gpu_hour,
            "inventory"
        );
    }
    Ok(inventory)
}

/// The declared nodes as they will be reported.
pub fn declared(nodes: &[NodeSpec]) -> Result<Inventory, InventoryError> {
    if nodes.is_empty() {
        return Err(InventoryError::NoDeclaredNodes);
    }
    Ok(Inventory {
        source: InventorySource::Declared,
        nodes: nodes.iter().map(report).collect(),
    })
}

fn report(n: &NodeSpec) -> NodeReport {
    NodeReport {
        name: n.name.clone(),
        gpu_model: n.gpu_model,
        gpus: n.gpus.get(),
        address: n.address.clone(),
        ask_micros_per_gpu_hour: n.price_micros_per_gpu_hour,
        site: n.site.clone(),
        fabric_domain: n.fabric_domain.clone(),
    }
}

/// Maps a device name as NVML reports it (`NVIDIA H100 80GB HBM3`,
/// `Tesla T4`, `NVIDIA GeForce RTX 4090`) to a catalog model: the whole name
/// first, then without the vendor or product-line prefix.
pub fn model_from_nvml_name(name: &str) -> Result<GpuModel, UnknownGpuModel> {
    let trimmed = name.trim();
    let mut candidates = vec![trimmed];
    for prefix in ["NVIDIA ", "Nvidia ", "nvidia ", "Tesla ", "NVIDIA Tesla "] {
        if let Some(rest) = trimmed.strip_prefix(prefix) {
            candidates.push(rest.trim());
        }
    }
    let mut first_err = None;
    // Longest-stripped last, so the reported close matches come from the
    // cleanest spelling.
    for c in candidates.iter().rev() {
        match GpuModel::resolve(c) {
            Ok(m) => return Ok(m),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    let mut err = first_err.expect("at least one candidate");
    err.name = trimmed.to_string();
    Err(err)
}

/// The one-node NVML inventory from the device names NVML listed, in index order.
/// `declared` supplies the name, address and ask; its model and count, if they
/// differ from the driver's, are overridden with a warning.
fn from_gpu_names(names: &[String], declared: Option<&NodeSpec>) -> Result<Inventory, InventoryError> {
    if names.is_empty() {
        return Err(InventoryError::NoGpus);
    }
    let mut models = Vec::with_capacity(names.len());
    for (index, name) in names.iter().enumerate() {
        let model = model_from_nvml_name(name).map_err(|error| InventoryError::UnknownModel {
            index: index as u32,
            name: name.clone(),
            error,
        })?;
        models.push(model);
    }
    let model = models[0];
    if models.iter().any(|m| *m != model) {
        // GPU indices on a node are 0..gpus for CUDA_VISIBLE_DEVICES, so a
        // node cannot be carved out of a mixed machine without an index map.
        let mut distinct: Vec<&str> = models.iter().map(|m| m.name()).collect();
        distinct.sort();
        distinct.dedup();
        return Err(InventoryError::MixedModels {
            models: distinct.join(", "),
        });
    }
    let declared = declared.ok_or(InventoryError::NoAsk)?;
    let gpus = names.len() as u32;
    if declared.gpu_model != model || declared.gpus.get() != gpus {
        warn!(
            node = %declared.name,
            declared = %format!("{} x {}", declared.gpus, declared.gpu_model),
            nvml = %format!("{gpus} x {model}"),
            "declared GPUs differ from what the driver reports; using the driver's"
        );
    }
    let mut node = report(declared);
    node.gpu_model = model;
    node.gpus = gpus;
    if node.name.is_empty() {
        node.name = host_name();
    }
    Ok(Inventory {
        source: InventorySource::Nvml,
        nodes: vec![node],
    })
}

/// Device names in NVML index order, or why NVML could not be asked.
fn nvml_gpu_names() -> Result<Vec<String>, InventoryError> {
    let unavailable = |e: nvml_wrapper::error::NvmlError| InventoryError::NvmlUnavailable(e.to_string());
    let nvml = nvml_wrapper::Nvml::init().map_err(unavailable)?;
    let count = nvml.device_count().map_err(unavailable)?;
    let mut names = Vec::with_capacity(count as usize);
    for i in 0..count {
        let name = nvml.device_by_index(i).and_then(|d| d.name()).map_err(unavailable)?;
        names.push(name);
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use agora_types::Micros;

    use super::*;

    fn spec(name: &str, model: &str, gpus: u32) -> NodeSpec {
        NodeSpec {
            name: name.to_string(),
            gpu_model: GpuModel::resolve(model).unwrap(),
            gpus: NonZeroU32::new(gpus).unwrap(),
            address: "10.0.0.1".to_string(),
            price_micros_per_gpu_hour: Micros(2_000_000),
            site: None,
            fabric_domain: None,
        }
    }

    #[test]
    fn nvml_names_map_to_catalog_models() {
        for (nvml, canonical) in [
            ("NVIDIA H100 80GB HBM3", "H100-80GB-SXM"),
            ("NVIDIA H100 PCIe", "H100-80GB-PCIe"),
            ("NVIDIA H200", "H200-141GB"),
            ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
            ("NVIDIA A100-SXM4-40GB", "A100-40GB"),
            ("NVIDIA GeForce RTX 4090", "RTX-4090"),
            ("NVIDIA A10G", "A10"),
            ("NVIDIA L40S", "L40S"),
            ("Tesla T4", "T4"),
            ("Tesla V100-32GB", "V100-32GB"),
        ] {
            assert_eq!(model_from_nvml_name(nvml).unwrap().name(), canonical, "{nvml}");
        }
    }

    #[test]
    fn unresolvable_nvml_name_is_reported_with_the_device() {
        let err = from_gpu_names(&["NVIDIA H100 80GB HBM3".into(), "NVIDIA Quantum 9000".into()], None).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("GPU 1 is a `NVIDIA Quantum 9000`"), "{msg}");
        assert!(msg.contains("inventory: declared"), "{msg}");
    }

    #[test]
    fn nvml_inventory_takes_model_and_count_from_the_driver() {
        let names = vec!["NVIDIA H200".to_string(); 4];
        let inv = from_gpu_names(&names, Some(&spec("box", "h100", 8))).unwrap();
        assert_eq!(inv.source, InventorySource::Nvml);
        assert_eq!(inv.nodes.len(), 1);
        let n = &inv.nodes[0];
        assert_eq!((n.name.as_str(), n.gpu_model.name(), n.gpus), ("box", "H200-141GB", 4));
        assert_eq!(n.ask_micros_per_gpu_hour, Micros(2_000_000));
        assert_eq!(n.address, "10.0.0.1");
    }

    #[test]
    fn nvml_inventory_refuses_mixed_models_and_a_missing_ask() {
        let mixed = vec!["NVIDIA H200".to_string(), "NVIDIA L4".to_string()];
        let err = from_gpu_names(&mixed, Some(&spec("box", "h100", 1))).unwrap_err();
        assert!(matches!(err, InventoryError::MixedModels { .. }), "{err}");
        let err = from_gpu_names(&["NVIDIA L4".to_string()], None).unwrap_err();
        assert!(matches!(err, InventoryError::NoAsk), "{err}");
        assert!(matches!(from_gpu_names(&[], None).unwrap_err(), InventoryError::NoGpus));
    }

    fn config(mode: InventoryMode, nodes: Vec<NodeSpec>) -> AgentConfig {
        let mut c = AgentConfig::from_yaml_str("server: http://h:1\nname: a\n").unwrap();
        c.inventory = mode;
        c.nodes = nodes;
        c
    }

    #[test]
    fn declared_inventory_reports_every_node() {
        let inv = discover(&config(
            InventoryMode::Declared,
            vec![spec("a", "h100", 8), spec("b", "l4", 1)],
        ))
        .unwrap();
        assert_eq!(inv.source, InventorySource::Declared);
        assert_eq!(
            inv.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(inv.nodes[0].gpus, 8);
        assert!(matches!(
            discover(&config(InventoryMode::Declared, vec![])),
            Err(InventoryError::NoDeclaredNodes)
        ));
    }

    #[test]
    fn auto_falls_back_to_declared_without_a_usable_driver() {
        // Whether or not this machine has a driver, auto with one declared node
        // yields an inventory; several declared nodes are always taken as declared.
        let inv = discover(&config(InventoryMode::Auto, vec![spec("a", "h100", 2)])).unwrap();
        assert_eq!(inv.nodes.len(), 1);
        let inv = discover(&config(
            InventoryMode::Auto,
            vec![spec("a", "h100", 2), spec("b", "h100", 2)],
        ))
        .unwrap();
        assert_eq!(inv.source, InventorySource::Declared);
        assert!(matches!(
            discover(&config(
                InventoryMode::Nvml,
                vec![spec("a", "h100", 2), spec("b", "h100", 2)]
            )),
            Err(InventoryError::TooManyDeclared(2))
        ));
    }
}
