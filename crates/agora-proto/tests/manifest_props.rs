//! Properties of the manifest parser: it never panics, whatever the input; what it
//! accepts is valid and survives canonical JSON; and any valid manifest written
//! as YAML parses back to itself.

use agora_proto::Manifest;
use agora_proto::manifest::{RESERVED_ENV_PREFIX, RESERVED_ENV_VARS, Resources};
use agora_types::{GpuModel, JobKind, Micros, PricePerGpuHour, Tier};
use proptest::prelude::*;

const GOOD: [&str; 3] = [
    include_str!("data/training.yaml"),
    include_str!("data/batch.yaml"),
    include_str!("data/minimal.yaml"),
];

/// What any outcome of `from_yaml` must satisfy.
fn check_outcome(text: &str) -> Result<(), TestCaseError> {
    match Manifest::from_yaml(text) {
        Ok(m) => {
            prop_assert_eq!(m.validate(), Ok(()));
            check_json_round_trip(&m)?;
        }
        Err(err) => {
            let lines = u32::try_from(text.lines().count()).unwrap_or(u32::MAX);
            if let Some(line) = err.line {
                prop_assert!(
                    line >= 1 && line <= lines.saturating_add(1),
                    "line {} of {}: {}",
                    line,
                    lines,
                    err
                );
            }
            prop_assert!(err.field.as_deref() != Some(""), "{}", err);
            prop_assert!(!err.message.is_empty());
        }
    }
    Ok(())
}

fn check_json_round_trip(m: &Manifest) -> Result<(), TestCaseError> {
    let json = serde_json::to_string(m).unwrap();
    let back: Manifest = serde_json::from_str(&json).unwrap();
    prop_assert_eq!(&back, m);
    prop_assert_eq!(serde_json::to_string(&back).unwrap(), json);
    Ok(())
}

/// One edit of a document.
#[derive(Debug, Clone)]
enum Edit {
    Delete { at: usize, len: usize },
    Insert { at: usize, fragment: &'static str },
    DuplicateLine { at: usize },
}

const FRAGMENTS: &[&str] = &[
    "\n",
    ": ",
    "- ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "&a ",
    "*a",
    "!!str ",
    "!!int ",
    "!x ",
    "'",
    "\"",
    "#",
    "  ",
    "\t",
    "~",
    "0",
    "-1",
    "2.5",
    "99999999999999999999",
    "1e999",
    ".nan",
    "---\n",
    "...\n",
    "<<: ",
    "? ",
    "|\n",
    ">-\n",
    "\u{feff}",
    "ü",
    "\\",
    "%YAML 1.2\n",
    "nodes: 3\n",
    "tasks: 2\n",
    "kind: batch\n",
    "kind: service\n",
    "env: {A: 1}\n",
    "gpu_models: [h100]\n",
    "  min_vram_gb: 200\n",
    "duration: 1d\n",
];

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1usize..20).prop_map(|(at, len)| Edit::Delete { at, len }),
        (any::<usize>(), prop::sample::select(FRAGMENTS)).prop_map(|(at, fragment)| Edit::Insert { at, fragment }),
        any::<usize>().prop_map(|at| Edit::DuplicateLine { at }),
    ]
}

/// The char boundary at or before `at % (len + 1)`.
fn boundary(text: &str, at: usize) -> usize {
    let mut i = at % (text.len() + 1);
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn apply(text: &mut String, edit: &Edit) {
    match edit {
        Edit::Delete { at, len } => {
            let start = boundary(text, *at);
            let end = boundary(text, start + len);
            if end > start {
                text.replace_range(start..end, "");
            }
        }
        Edit::Insert { at, fragment } => {
            let at = boundary(text, *at);
            text.insert_str(at, fragment);
        }
        Edit::DuplicateLine { at } => {
            let lines: Vec<&str> = text.lines().collect();
            if !lines.is_empty() {
                let i = at % lines.len();
                let mut out: Vec<&str> = lines[..=i].to_vec();
                out.extend(&lines[i..]);
                *text = out.join("\n") + "\n";
            }
        }
    }
}

/// Text that YAML and JSON quote the same way: printable, some non-ASCII, tabs and newlines.
fn text(max: usize) -> impl Strategy<Value = String> {
    prop::string::string_regex(&format!("[ -~é漢😀\t\n]{{0,{max}}}")).unwrap()
}

fn env_name() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_]{0,12}".prop_filter("reserved", |n| {
        !n.starts_with(RESERVED_ENV_PREFIX) && !RESERVED_ENV_VARS.contains(&n.as_str())
    })
}

fn manifest() -> impl Strategy<Value = Manifest> {
    let all: Vec<GpuModel> = GpuModel::all().collect();
    let resources = (
        prop_oneof![Just(JobKind::Training), Just(JobKind::Batch)],
        1u32..=64,
        1u32..=4096,
        1u32..=10_000,
        prop::sample::subsequence(all, 0..=4),
        // Every model of the catalog has at least 15 GiB, so any minimum up to that is satisfiable.
        0u32..=15,
        prop::option::of(1u32..=1000),
    )
        .prop_map(
            |(kind, gpus_per_node, nodes, tasks, gpu_models, min_vram_gib, latency)| {
                let (nodes, tasks) = if kind == JobKind::Training {
                    (nodes, 1)
                } else {
                    (1, tasks)
                };
                (
                    kind,
                    Resources {
                        gpus_per_node,
                        nodes,
                        tasks,
                        gpu_models,
                        min_vram_mib: min_vram_gib * 1024,
                        // Only gangs may span providers.
                        cross_provider_max_latency_ms: latency.filter(|_| nodes > 1),
                    },
                )
            },
        );
    (
        "[A-Za-z0-9._-]{1,64}",
        resources,
        prop_oneof![Just(Tier::OnDemand), Just(Tier::Spot)],
        1i128..=1_000_000_000_000,
        prop::option::of(1u64..=365 * 86_400),
        "[a-z./][ -~]{0,40}",
        prop::collection::vec(text(30), 0..6),
        prop::collection::btree_map(env_name(), text(30), 0..6),
        prop::option::of("/[a-z0-9/]{0,20}"),
    )
        .prop_map(
            |(name, (kind, resources), tier, micros, duration, command, args, env, workdir)| Manifest {
                name,
                kind,
                resources,
                tier,
                max_price_per_gpu_hour: PricePerGpuHour(Micros(micros)),
                duration_estimate_s: duration,
                command,
                args,
                env,
                workdir,
                checkpointable: false,
            },
        )
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// `seconds` as `1d2h3m4s`, leaving out zero parts.
fn units(mut seconds: u64) -> String {
    let mut out = String::new();
    for (unit, size) in [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)] {
        if seconds >= size {
            out.push_str(&format!("{}{unit}", seconds / size));
            seconds %= size;
        }
    }
    out
}

/// Writes `m` in the YAML surface, varying the spellings the surface allows.
fn to_yaml(m: &Manifest, style: u8) -> String {
    let r = &m.resources;
    let mut y = format!(
        "name: {}\nkind: {}\nresources:\n  gpus_per_node: {}\n",
        quoted(&m.name),
        m.kind.as_str(),
        r.gpus_per_node
    );
    match m.kind {
        JobKind::Training if style & 1 == 0 || r.nodes != 1 => y.push_str(&format!("  nodes: {}\n", r.nodes)),
        JobKind::Batch if style & 1 == 0 || r.tasks != 1 => y.push_str(&format!("  tasks: {}\n", r.tasks)),
        _ => {}
    }
    if !r.gpu_models.is_empty() || style & 2 == 0 {
        // Lowercase names go through alias resolution.
        let names: Vec<String> = r.gpu_models.iter().map(|g| g.name().to_lowercase()).collect();
        y.push_str(&format!("  gpu_models: [{}]\n", names.join(", ")));
    }
    if r.min_vram_mib != 0 || style & 4 == 0 {
        y.push_str(&format!("  min_vram_gb: {}\n", r.min_vram_mib / 1024));
    }
    if let Some(ms) = r.cross_provider_max_latency_ms {
        y.push_str(&format!("  cross_provider: {{max_latency_ms: {ms}}}\n"));
    }
    if m.tier == Tier::Spot || style & 8 == 0 {
        y.push_str(&format!("tier: {}\n", m.tier));
    }
    let price = m.max_price_per_gpu_hour.0.to_string();
    if style & 16 == 0 {
        y.push_str(&format!("max_price_per_gpu_hour: {price}\n"));
    } else {
        y.push_str(&format!("max_price_per_gpu_hour: \"{price}\"\n"));
    }
    if let Some(seconds) = m.duration_estimate_s {
        if style & 32 == 0 {
            y.push_str(&format!("duration: {seconds}\n"));
        } else {
            y.push_str(&format!("duration: {}\n", units(seconds)));
        }
    }
    y.push_str(&format!("command: {}\n", quoted(&m.command)));
    if !m.args.is_empty() {
        y.push_str("args:\n");
        for arg in &m.args {
            y.push_str(&format!("  - {}\n", quoted(arg)));
        }
    }
    if !m.env.is_empty() {
        let entries: Vec<String> = m.env.iter().map(|(k, v)| format!("{k}: {}", quoted(v))).collect();
        y.push_str(&format!("env: {{{}}}\n", entries.join(", ")));
    }
    if let Some(workdir) = &m.workdir {
        y.push_str(&format!("workdir: {}\n", quoted(workdir)));
    }
    y
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn never_panics_on_arbitrary_text(text in any::<String>()) {
        check_outcome(&text)?;
    }

    #[test]
    fn never_panics_on_yaml_like_text(text in "[a-z_:\\-\\[\\]{},&*!|>'\"#0-9. \t\n~?<]{0,300}") {
        check_outcome(&text)?;
    }

    #[test]
    fn never_panics_on_mutations_of_good_manifests(
        which in 0..GOOD.len(),
        edits in prop::collection::vec(edit(), 1..8),
    ) {
        let mut text = GOOD[which].to_string();
        for e in &edits {
            apply(&mut text, e);
        }
        check_outcome(&text)?;
    }

    #[test]
    fn valid_manifests_round_trip(m in manifest(), style in any::<u8>()) {
        prop_assert_eq!(m.validate(), Ok(()));
        check_json_round_trip(&m)?;
        let yaml = to_yaml(&m, style);
        prop_assert_eq!(Manifest::from_yaml(&yaml), Ok(m), "{}", yaml);
    }
}

#[test]
fn good_manifests_round_trip_through_json() {
    for text in GOOD {
        check_json_round_trip(&Manifest::from_yaml(text).unwrap()).unwrap();
    }
}
