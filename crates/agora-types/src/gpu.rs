//! The GPU catalog: the models the exchange knows, their specifications and aliases.
//!
//! A [`GpuModel`] is an index into the static catalog, cheap to copy and compare
//! in the engine's hot path; it serializes as the canonical name so stored events
//! and API documents never depend on the catalog's order.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Static facts about one GPU model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuSpec {
    /// Canonical name, as printed everywhere.
    pub name: &'static str,
    pub vram_mib: u32,
    pub tdp_w: u32,
    /// Lowercase alternative spellings accepted on input (besides the name itself).
    pub aliases: &'static [&'static str],
}

const CATALOG: &[GpuSpec] = &[
    GpuSpec {
        name: "H100-80GB-SXM",
        vram_mib: 81_920,
        tdp_w: 700,
        aliases: &[
            "h100",
            "h100-sxm",
            "h100-80gb",
            "h100-sxm5",
            "nvidia-h100-sxm",
            "nvidia-h100",
            "h100-80gb-hbm3",
        ],
    },
    GpuSpec {
        name: "H100-80GB-PCIe",
        vram_mib: 81_920,
        tdp_w: 350,
        aliases: &["h100-pcie", "nvidia-h100-pcie"],
    },
    GpuSpec {
        name: "H200-141GB",
        vram_mib: 144_384,
        tdp_w: 700,
        aliases: &["h200", "nvidia-h200", "h200-sxm"],
    },
    GpuSpec {
        name: "B200-180GB",
        vram_mib: 184_320,
        tdp_w: 1000,
        aliases: &["b200", "nvidia-b200"],
    },
    GpuSpec {
        name: "A100-80GB",
        vram_mib: 81_920,
        tdp_w: 400,
        aliases: &["a100-80g", "nvidia-a100-80gb", "a100-sxm4-80gb"],
    },
    GpuSpec {
        name: "A100-40GB",
        vram_mib: 40_960,
        tdp_w: 400,
        aliases: &["a100", "nvidia-a100", "a100-sxm4-40gb"],
    },
    GpuSpec {
        name: "L40S",
        vram_mib: 46_068,
        tdp_w: 350,
        aliases: &["nvidia-l40s"],
    },
    GpuSpec {
        name: "L4",
        vram_mib: 23_034,
        tdp_w: 72,
        aliases: &["nvidia-l4"],
    },
    GpuSpec {
        name: "A10",
        vram_mib: 23_028,
        tdp_w: 150,
        aliases: &["a10g", "nvidia-a10"],
    },
    GpuSpec {
        name: "RTX-4090",
        vram_mib: 24_564,
        tdp_w: 450,
        aliases: &["rtx4090", "4090", "geforce-rtx-4090", "nvidia-geforce-rtx-4090"],
    },
    GpuSpec {
        name: "RTX-3090",
        vram_mib: 24_576,
        tdp_w: 350,
        aliases: &["rtx3090", "3090", "geforce-rtx-3090"],
    },
    GpuSpec {
        name: "RTX-A6000",
        vram_mib: 49_140,
        tdp_w: 300,
        aliases: &["rtxa6000", "a6000", "nvidia-rtx-a6000"],
    },
    GpuSpec {
        name: "V100-32GB",
        vram_mib: 32_768,
        tdp_w: 300,
        aliases: &["v100", "tesla-v100"],
    },
    GpuSpec {
        name: "T4",
        vram_mib: 15_360,
        tdp_w: 70,
        aliases: &["tesla-t4", "nvidia-t4"],
    },
    GpuSpec {
        name: "MI300X",
        vram_mib: 196_608,
        tdp_w: 750,
        aliases: &["amd-mi300x", "instinct-mi300x"],
    },
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

/// Levenshtein distance, used only to suggest close model names.
fn edit_distance(a: &str, b: &str) -> usize {
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
    fn serializes_as_the_canonical_name() {
        let m = GpuModel::resolve("h100").unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"H100-80GB-SXM\"");
        let back: GpuModel = serde_json::from_str("\"nvidia-h100\"").unwrap();
        assert_eq!(back, m);
    }
}
