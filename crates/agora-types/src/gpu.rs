//! The GPU catalog: the models the exchange knows, their specifications and aliases.
//!
//! A [`GpuModel`] is an index into the static catalog, cheap to copy and compare
//! in the engine's hot path; it serializes as the canonical name so stored events
//! and API documents never depend on the catalog's order.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How a GPU attaches to its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interface {
    /// NVIDIA's SXM socket on an HGX board (NVLink between the GPUs).
    Sxm,
    Pcie,
    /// OCP accelerator module (AMD Instinct).
    Oam,
}

/// Static facts about one GPU model. Figures are the vendors' public
/// specifications; `bf16_tflops` is dense (no sparsity), 0 where the model has
/// no bf16 units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuSpec {
    /// Canonical name, as printed everywhere.
    pub name: &'static str,
    pub vram_mib: u32,
    pub bf16_tflops: u32,
    pub tdp_w: u32,
    pub interface: Interface,
    /// Lowercase alternative spellings accepted on input (besides the name itself).
    pub aliases: &'static [&'static str],
}

const fn gpu(
    name: &'static str,
    vram_gib: u32,
    bf16_tflops: u32,
    tdp_w: u32,
    interface: Interface,
    aliases: &'static [&'static str],
) -> GpuSpec {
    GpuSpec {
        name,
        vram_mib: vram_gib * 1024,
        bf16_tflops,
        tdp_w,
        interface,
        aliases,
    }
}

const CATALOG: &[GpuSpec] = &[
    gpu(
        "H100-80GB-SXM",
        80,
        989,
        700,
        Interface::Sxm,
        &[
            "h100",
            "h100-sxm",
            "h100-80gb",
            "h100-sxm5",
            "nvidia-h100-sxm",
            "nvidia-h100",
            "h100-80gb-hbm3",
        ],
    ),
    gpu(
        "H100-80GB-PCIe",
        80,
        756,
        350,
        Interface::Pcie,
        &["h100-pcie", "nvidia-h100-pcie"],
    ),
    gpu(
        "H200-141GB",
        141,
        989,
        700,
        Interface::Sxm,
        &["h200", "nvidia-h200", "h200-sxm"],
    ),
    gpu("B200-180GB", 180, 2250, 1000, Interface::Sxm, &["b200", "nvidia-b200"]),
    gpu(
        "A100-80GB",
        80,
        312,
        400,
        Interface::Sxm,
        &["a100-80g", "nvidia-a100-80gb", "a100-sxm4-80gb"],
    ),
    gpu(
        "A100-40GB",
        40,
        312,
        400,
        Interface::Sxm,
        &["a100", "nvidia-a100", "a100-sxm4-40gb"],
    ),
    gpu("L40S", 48, 362, 350, Interface::Pcie, &["nvidia-l40s"]),
    gpu("L4", 24, 121, 72, Interface::Pcie, &["nvidia-l4"]),
    gpu("A10", 24, 125, 150, Interface::Pcie, &["a10g", "nvidia-a10"]),
    gpu(
        "RTX-4090",
        24,
        165,
        450,
        Interface::Pcie,
        &["rtx4090", "4090", "geforce-rtx-4090", "nvidia-geforce-rtx-4090"],
    ),
    gpu(
        "RTX-3090",
        24,
        71,
        350,
        Interface::Pcie,
        &["rtx3090", "3090", "geforce-rtx-3090"],
    ),
    gpu(
        "RTX-A6000",
        48,
        155,
        300,
        Interface::Pcie,
        &["rtxa6000", "a6000", "nvidia-rtx-a6000"],
    ),
    gpu(
        "V100-32GB",
        32,
        0,
        300,
        Interface::Sxm,
        &["v100", "tesla-v100", "v100m32", "tesla-v100-32gb"],
    ),
    gpu("T4", 16, 0, 70, Interface::Pcie, &["tesla-t4", "nvidia-t4"]),
    gpu(
        "MI300X",
        192,
        1307,
        750,
        Interface::Oam,
        &["amd-mi300x", "instinct-mi300x"],
    ),
    // Appended, not inserted: a model's index orders the engine's model-keyed maps.
    gpu(
        "GB200-186GB",
        186,
        2500,
        1200,
        Interface::Sxm,
        &["gb200", "nvidia-gb200", "gb200-nvl72"],
    ),
    gpu(
        "RTX-5090",
        32,
        209,
        575,
        Interface::Pcie,
        &["rtx5090", "5090", "geforce-rtx-5090", "nvidia-geforce-rtx-5090"],
    ),
    // The older data-centre GPUs real traces name (Alibaba's `V100M16`, `P100`).
    gpu(
        "V100-16GB",
        16,
        0,
        300,
        Interface::Sxm,
        &["v100m16", "tesla-v100-16gb", "v100-sxm2-16gb"],
    ),
    gpu(
        "P100",
        16,
        0,
        250,
        Interface::Pcie,
        &["tesla-p100", "p100-16gb", "nvidia-p100"],
    ),
];

/// A GPU model of the catalog.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GpuModel(u16);

/// An unknown model name, with the catalog names that look closest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown GPU model `{name}`{}", suggestion(close_matches))]
pub struct UnknownGpuModel {
    pub name: String,
    pub close_matches: Vec<&'static str>,
}

fn suggestion(close: &[&'static str]) -> String {
    if close.is_empty() {
        format!(
            "; known models: {}",
            CATALOG.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
        )
    } else {
        format!("; did you mean {}?", close.join(", "))
    }
}

fn normalize(name: &str) -> String {
    name.trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c == '_' || c == ' ' { '-' } else { c })
        .collect()
}

impl GpuModel {
    /// Every model of the catalog, in catalog order.
    pub fn all() -> impl Iterator<Item = GpuModel> {
        (0..CATALOG.len() as u16).map(GpuModel)
    }

    /// Resolves a canonical name or an alias, case-insensitively.
    pub fn resolve(name: &str) -> Result<GpuModel, UnknownGpuModel> {
        let wanted = normalize(name);
        for (i, spec) in CATALOG.iter().enumerate() {
            if normalize(spec.name) == wanted || spec.aliases.iter().any(|a| *a == wanted) {
                return Ok(GpuModel(i as u16));
            }
        }
        let mut scored: Vec<(usize, &'static str)> = CATALOG
            .iter()
            .map(|s| {
                let best = std::iter::once(normalize(s.name))
                    .chain(s.aliases.iter().map(|a| a.to_string()))
                    .map(|cand| edit_distance(&wanted, &cand))
                    .min()
                    .unwrap_or(usize::MAX);
                (best, s.name)
            })
            .filter(|(d, _)| *d <= 3)
            .collect();
        scored.sort();
        Err(UnknownGpuModel {
            name: name.to_string(),
            close_matches: scored.into_iter().take(3).map(|(_, n)| n).collect(),
        })
    }

    pub fn spec(self) -> &'static GpuSpec {
        &CATALOG[self.0 as usize]
    }

    pub fn name(self) -> &'static str {
        self.spec().name
    }
}

impl std::fmt::Display for GpuModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for GpuModel {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for GpuModel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        GpuModel::resolve(&name).map_err(serde::de::Error::custom)
    }
}

/// Levenshtein distance between two strings, in characters: how close-match
/// suggestions ("did you mean …?") are ranked here and in the manifest parser.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_resolve_to_the_canonical_model() {
        for alias in ["h100", "H100-80GB", "nvidia-h100-sxm", "H100_80GB_SXM", "h100-80gb-sxm"] {
            assert_eq!(GpuModel::resolve(alias).unwrap().name(), "H100-80GB-SXM", "{alias}");
        }
        assert_eq!(GpuModel::resolve("rtx4090").unwrap().name(), "RTX-4090");
    }

    #[test]
    fn unknown_model_lists_close_matches() {
        let err = GpuModel::resolve("h10").unwrap_err();
        assert!(err.close_matches.contains(&"H100-80GB-SXM"), "{err}");
        assert!(
            err.to_string().starts_with("unknown GPU model `h10`; did you mean"),
            "{err}"
        );
    }

    #[test]
    fn aliases_are_unique_across_the_catalog() {
        let mut seen = std::collections::BTreeSet::new();
        for spec in CATALOG {
            assert!(seen.insert(normalize(spec.name)), "{}", spec.name);
            for a in spec.aliases {
                assert_eq!(*a, normalize(a), "aliases are stored normalized");
                assert!(seen.insert(a.to_string()), "duplicate alias {a}");
            }
        }
    }

    #[test]
    fn the_catalog_has_the_common_models_with_their_figures() {
        let h100 = GpuModel::resolve("h100").unwrap().spec();
        assert_eq!(
            (h100.vram_mib, h100.bf16_tflops, h100.tdp_w, h100.interface),
            (81_920, 989, 700, Interface::Sxm)
        );
        for name in [
            "gb200",
            "rtx5090",
            "H100-80GB-PCIe",
            "mi300x",
            "a100",
            "A100-80GB",
            "l40s",
            "t4",
        ] {
            assert!(GpuModel::resolve(name).is_ok(), "{name}");
        }
        assert_eq!(GpuModel::resolve("mi300x").unwrap().spec().interface, Interface::Oam);
    }

    #[test]
    fn serializes_as_the_canonical_name() {
        let m = GpuModel::resolve("h100").unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"H100-80GB-SXM\"");
        let back: GpuModel = serde_json::from_str("\"nvidia-h100\"").unwrap();
        assert_eq!(back, m);
    }
}
