//! The YAML manifest surface: good manifests of each kind, and a table of bad
//! inputs, each pinned to the field, line and gist of its error.

use std::collections::BTreeMap;

use agora_proto::manifest::{MAX_MANIFEST_BYTES, Resources};
use agora_proto::{Manifest, ManifestError};
use agora_types::{GpuModel, JobKind, Micros, PricePerGpuHour, Tier};

fn data(name: &str) -> String {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn model(name: &str) -> GpuModel {
    GpuModel::resolve(name).unwrap()
}

fn price(text: &str) -> PricePerGpuHour {
    PricePerGpuHour(Micros::parse_decimal(text).unwrap())
}

/// A valid training manifest; the bad cases below edit it. Lines:
/// 1 name, 2 kind, 3 resources, 4 gpus_per_node, 5 price, 6 command.
const BASE: &str =
    "name: hello\nkind: training\nresources:\n  gpus_per_node: 2\nmax_price_per_gpu_hour: 3.00\ncommand: bash\n";

#[test]
fn training_manifest_with_aliases() {
    let m = Manifest::from_yaml(&data("training.yaml")).unwrap();
    let env: BTreeMap<String, String> = [
        ("NCCL_DEBUG", "INFO"),
        ("EPOCHS", "10"),
        ("LR", "3.0e-4"),
        ("RESUME", "false"),
        ("VERSION", "1.10"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let expected = Manifest {
        name: "hello-gpus".into(),
        kind: JobKind::Training,
        resources: Resources {
            gpus_per_node: 8,
            nodes: 2,
            tasks: 1,
            gpu_models: vec![model("H100-80GB-SXM"), model("H200-141GB")],
            min_vram_mib: 80 * 1024,
            cross_provider_max_latency_ms: Some(25),
        },
        tier: Tier::OnDemand,
        max_price_per_gpu_hour: price("3"),
        duration_estimate_s: Some(5400),
        command: "torchrun".into(),
        args: vec![
            "--nproc-per-node=8".into(),
            "train.py".into(),
            "--epochs".into(),
            "10".into(),
        ],
        env,
        workdir: Some("/workspace".into()),
        checkpointable: false,
    };
    assert_eq!(m, expected);
    assert_eq!(m.total_gpus(), 16);
}

#[test]
fn repository_examples_are_valid() {
    let dir = format!("{}/../../examples", env!("CARGO_MANIFEST_DIR"));
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            Manifest::from_yaml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen > 0, "no examples in {dir}");
}

#[test]
fn batch_manifest() {
    let m = Manifest::from_yaml(&data("batch.yaml")).unwrap();
    assert_eq!(m.kind, JobKind::Batch);
    assert_eq!(m.resources.tasks, 500);
    assert_eq!(m.resources.nodes, 1);
    assert_eq!(
        m.resources.gpu_models,
        vec![model("RTX-4090"), model("L40S"), model("A100-40GB")]
    );
    assert_eq!(m.tier, Tier::Spot);
    assert_eq!(m.max_price_per_gpu_hour, price("0.45"));
    assert_eq!(m.duration_estimate_s, Some(5400));
    assert_eq!(m.args, ["sweep.py", "--trial", "$TASK"]);
    assert_eq!(m.env.get("WANDB_MODE").map(String::as_str), Some("offline"));
    assert_eq!(m.workdir, None);
    assert_eq!(m.total_gpus(), 500);
}

#[test]
fn minimal_manifest_gets_the_defaults() {
    let m = Manifest::from_yaml(&data("minimal.yaml")).unwrap();
    assert_eq!(
        m.resources,
        Resources {
            gpus_per_node: 1,
            nodes: 1,
            tasks: 1,
            gpu_models: vec![],
            min_vram_mib: 0,
            cross_provider_max_latency_ms: None,
        }
    );
    assert_eq!(m.tier, Tier::OnDemand);
    assert_eq!(m.max_price_per_gpu_hour, price("2"));
    assert_eq!(
        (m.duration_estimate_s, m.args.len(), m.env.len(), m.workdir),
        (None, 0, 0, None)
    );
}

#[test]
fn reserved_work_needs_no_bid_but_other_tiers_do() {
    let reserved = "name: mine\nkind: training\nresources:\n  gpus_per_node: 8\ntier: reserved\ncommand: bash\n";
    let m = Manifest::from_yaml(reserved).unwrap();
    assert_eq!(m.tier, Tier::Reserved);
    assert_eq!(m.max_price_per_gpu_hour, PricePerGpuHour(Micros::ZERO));
    m.validate().unwrap();
    let spot = reserved.replace("reserved", "spot");
    let err = Manifest::from_yaml(&spot).unwrap_err();
    assert_eq!(err.field.as_deref(), Some("max_price_per_gpu_hour"), "{err}");
}

#[test]
fn null_optional_fields_are_absent() {
    let m = Manifest::from_yaml(&format!("{BASE}duration: ~\nargs:\nenv: null\nworkdir:\ntier:\n")).unwrap();
    assert_eq!(m, Manifest::from_yaml(BASE).unwrap());
}

#[test]
fn durations_in_every_form() {
    for (written, seconds) in [
        ("5400", 5400),
        ("'5400'", 5400),
        ("90s", 90),
        ("30m", 1800),
        ("2h", 7200),
        ("1h30m", 5400),
        ("\"1d\"", 86_400),
        ("1d2h3m4s", 93_784),
        ("365d", 365 * 86_400),
    ] {
        let m = Manifest::from_yaml(&format!("{BASE}duration: {written}\n")).unwrap();
        assert_eq!(m.duration_estimate_s, Some(seconds), "{written}");
    }
}

#[test]
fn prices_as_numbers_and_strings() {
    for (written, micros) in [
        ("3.00", 3_000_000),
        ("\"3.00\"", 3_000_000),
        ("'2.5'", 2_500_000),
        ("3", 3_000_000),
        ("0.000001", 1),
        ("1000000", 1_000_000_000_000),
        ("\"1000000.000000\"", 1_000_000_000_000),
    ] {
        let yaml = BASE.replace(
            "max_price_per_gpu_hour: 3.00",
            &format!("max_price_per_gpu_hour: {written}"),
        );
        let m = Manifest::from_yaml(&yaml).unwrap();
        assert_eq!(m.max_price_per_gpu_hour, PricePerGpuHour(Micros(micros)), "{written}");
    }
}

#[test]
fn gpu_model_aliases_resolve() {
    let yaml = BASE.replace(
        "  gpus_per_node: 2\n",
        "  gpus_per_node: 2\n  gpu_models: [h100, nvidia-h200, A100_80GB, 4090, mi300x]\n",
    );
    let m = Manifest::from_yaml(&yaml).unwrap();
    let names: Vec<&str> = m.resources.gpu_models.iter().map(|g| g.name()).collect();
    assert_eq!(
        names,
        ["H100-80GB-SXM", "H200-141GB", "A100-80GB", "RTX-4090", "MI300X"]
    );
    let any = BASE.replace("  gpus_per_node: 2\n", "  gpus_per_node: 2\n  gpu_models: []\n");
    assert!(Manifest::from_yaml(&any).unwrap().resources.gpu_models.is_empty());
}

#[test]
fn env_values_keep_the_text_written() {
    let yaml = format!("{BASE}env: {{A: 1.10, B: 0x1F, C: .inf, D: TRUE, E: no, F: '', G: \"q\"}}\n");
    let env = Manifest::from_yaml(&yaml).unwrap().env;
    let values: Vec<&str> = env.values().map(String::as_str).collect();
    assert_eq!(values, ["1.10", "0x1F", ".inf", "TRUE", "no", "", "q"]);
}

#[test]
fn anchors_and_aliases_are_plain_yaml() {
    let yaml = "name: &n same\nkind: batch\nresources: {gpus_per_node: 1, tasks: 2}\n\
                max_price_per_gpu_hour: &p 1.50\ncommand: echo\nargs: [*n, *p]\n";
    let m = Manifest::from_yaml(yaml).unwrap();
    assert_eq!(m.args, ["same", "1.50"]);
}

#[test]
fn canonical_json_is_stable() {
    let m = Manifest::from_yaml(&data("batch.yaml")).unwrap();
    let json = serde_json::to_string(&m).unwrap();
    assert_eq!(
        json,
        r#"{"name":"sweep.v2_small","kind":"batch","resources":{"gpus_per_node":1,"nodes":1,"tasks":500,"gpu_models":["RTX-4090","L40S","A100-40GB"],"min_vram_mib":0},"tier":"spot","max_price_per_gpu_hour":450000,"duration_estimate_s":5400,"command":"python","args":["sweep.py","--trial","$TASK"],"env":{"WANDB_MODE":"offline"},"workdir":null}"#
    );
    let back: Manifest = serde_json::from_str(&json).unwrap();
    assert_eq!(back, m);
}

#[test]
fn json_manifests_get_defaults_and_reject_unknown_fields() {
    let m: Manifest = serde_json::from_str(
        r#"{"name":"j","kind":"training","resources":{"gpus_per_node":4},"max_price_per_gpu_hour":2000000,"command":"x"}"#,
    )
    .unwrap();
    assert_eq!((m.resources.nodes, m.resources.tasks, m.tier), (1, 1, Tier::OnDemand));
    m.validate().unwrap();
    let unknown = serde_json::from_str::<Manifest>(
        r#"{"name":"j","kind":"training","resources":{"gpus_per_node":4,"gpus":1},"max_price_per_gpu_hour":1,"command":"x"}"#,
    );
    assert!(unknown.unwrap_err().to_string().contains("unknown field `gpus`"));
}

#[test]
fn validate_names_canonical_fields_without_lines() {
    let mut m = Manifest::from_yaml(BASE).unwrap();
    m.resources.min_vram_mib = 5000 * 1024;
    assert_eq!(
        m.validate().unwrap_err(),
        ManifestError {
            field: Some("resources.min_vram_mib".into()),
            line: None,
            message: "must be at most 4096 GiB".into()
        }
    );
    let mut m = Manifest::from_yaml(BASE).unwrap();
    m.duration_estimate_s = Some(0);
    assert_eq!(m.validate().unwrap_err().field.as_deref(), Some("duration_estimate_s"));
    let mut m = Manifest::from_yaml(BASE).unwrap();
    m.kind = JobKind::Batch;
    m.resources.nodes = 2;
    assert_eq!(
        m.validate().unwrap_err().to_string(),
        "resources.nodes: only applies to training jobs"
    );
    let mut m = Manifest::from_yaml(BASE).unwrap();
    m.resources.gpu_models = vec![model("h100"), model("h200"), model("h100")];
    assert_eq!(
        m.validate().unwrap_err().to_string(),
        "resources.gpu_models[2]: H100-80GB-SXM is listed twice"
    );
    let mut m = Manifest::from_yaml(BASE).unwrap();
    m.env.insert("bad name".into(), "x".into());
    assert_eq!(m.validate().unwrap_err().field.as_deref(), Some("env"));
    let mut m = Manifest::from_yaml(BASE).unwrap();
    m.args = vec!["ok".into(), "nul\0".into()];
    assert_eq!(
        m.validate().unwrap_err().to_string(),
        "args[1]: must not contain NUL bytes"
    );
}

#[test]
fn service_parses_but_does_not_validate() {
    let yaml = BASE.replace("kind: training", "kind: service");
    let err = Manifest::from_yaml(&yaml).unwrap_err();
    assert_eq!(err.to_string(), "line 2: kind: service workloads are not yet supported");
    let mut m = Manifest::from_yaml(BASE).unwrap();
    m.kind = JobKind::Service;
    assert_eq!(
        m.validate().unwrap_err().to_string(),
        "kind: service workloads are not yet supported"
    );
}

#[test]
fn oversized_document_is_refused_before_parsing() {
    let yaml = format!("{BASE}# {}\n", "x".repeat(MAX_MANIFEST_BYTES));
    let err = Manifest::from_yaml(&yaml).unwrap_err();
    assert_eq!((err.field, err.line), (None, None));
    assert!(err.message.contains("the limit is 262144 bytes"), "{}", err.message);
}

/// `(yaml, field, line, part of the message)` for one bad manifest.
type Case = (String, Option<&'static str>, Option<u32>, &'static str);

fn with(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from}");
    BASE.replacen(from, to, 1)
}

fn gpus(written: &str) -> String {
    with("gpus_per_node: 2", &format!("gpus_per_node: {written}"))
}

fn priced(written: &str) -> String {
    with(
        "max_price_per_gpu_hour: 3.00",
        &format!("max_price_per_gpu_hour: {written}"),
    )
}

fn extra(lines: &str) -> String {
    format!("{BASE}{lines}")
}

fn cases() -> Vec<Case> {
    let f = Some;
    let l = Some;
    vec![
        // Documents.
        ("name: [hello\n".into(), None, l(1), "invalid YAML"),
        ("name: hello\n  kind: x\n".into(), None, l(2), "invalid YAML"),
        ("".into(), None, None, "the manifest is empty"),
        ("# nothing here\n".into(), None, None, "the manifest is empty"),
        ("---\n".into(), None, None, "the manifest is empty"),
        (format!("{BASE}---\n{BASE}"), None, l(8), "single YAML document"),
        (
            "- name\n- kind\n".into(),
            None,
            l(1),
            "must be a mapping of fields, found a list",
        ),
        (
            "hello\n".into(),
            None,
            l(1),
            "must be a mapping of fields, found the text `hello`",
        ),
        ("? [a]\n: b\n".into(), None, l(1), "keys must be names, found a list"),
        (
            extra(&format!("args: {}x{}\n", "[".repeat(30), "]".repeat(30))),
            None,
            l(7),
            "deeper than 16 levels",
        ),
        (gpus("!custom 2"), None, l(4), "invalid YAML"),
        // Unknown and repeated fields.
        (
            extra("colour: red\n"),
            f("colour"),
            l(7),
            "unknown field (valid fields: name, kind, resources, tier",
        ),
        (
            with("command: bash", "comand: bash"),
            f("comand"),
            l(6),
            "did you mean `command`?",
        ),
        (
            with("  gpus_per_node: 2\n", "  gpus_per_node: 2\n  gpu: 1\n"),
            f("resources.gpu"),
            l(5),
            "valid fields: gpus_per_node, nodes",
        ),
        (
            with("  gpus_per_node: 2\n", "  gpus_per_node: 2\n  min_vram_mib: 1\n"),
            f("resources.min_vram_mib"),
            l(5),
            "did you mean `min_vram_gb`?",
        ),
        (
            extra("name: again\n"),
            f("name"),
            l(7),
            "is given twice (first on line 1)",
        ),
        // Required fields.
        (with("name: hello\n", ""), f("name"), None, "is required"),
        (with("command: bash\n", ""), f("command"), None, "is required"),
        (
            with("  gpus_per_node: 2\n", "  nodes: 2\n"),
            f("resources.gpus_per_node"),
            l(3),
            "is required",
        ),
        (with("name: hello", "name:"), f("name"), l(1), "must have a value"),
        (
            with("resources:\n  gpus_per_node: 2\n", "resources: 5\n"),
            f("resources"),
            l(3),
            "must be a mapping, found the number 5",
        ),
        // Name and kind.
        (
            with("name: hello", "name: hello world"),
            f("name"),
            l(1),
            "` ` is not allowed",
        ),
        (
            with("name: hello", &format!("name: {}", "a".repeat(65))),
            f("name"),
            l(1),
            "at most 64 characters",
        ),
        (with("name: hello", "name: ''"), f("name"), l(1), "must not be empty"),
        (
            with("kind: training", "kind: Training"),
            f("kind"),
            l(2),
            "must be training, batch or service, found `Training`",
        ),
        (
            with("kind: training", "kind: service"),
            f("kind"),
            l(2),
            "service workloads are not yet supported",
        ),
        // GPU counts.
        (
            gpus("0"),
            f("resources.gpus_per_node"),
            l(4),
            "must be between 1 and 64",
        ),
        (
            gpus("65"),
            f("resources.gpus_per_node"),
            l(4),
            "must be between 1 and 64",
        ),
        (
            gpus("-1"),
            f("resources.gpus_per_node"),
            l(4),
            "must be between 1 and 64",
        ),
        (
            gpus("99999999999999999999"),
            f("resources.gpus_per_node"),
            l(4),
            "must be between 1 and 64",
        ),
        (
            gpus("-99999999999999999999999999999999999999999"),
            f("resources.gpus_per_node"),
            l(4),
            "must be between 1 and 64",
        ),
        (
            gpus("2.5"),
            f("resources.gpus_per_node"),
            l(4),
            "must be a whole number, found the number 2.5",
        ),
        (
            gpus("two"),
            f("resources.gpus_per_node"),
            l(4),
            "must be a whole number, found the text `two`",
        ),
        (
            gpus("\"2\""),
            f("resources.gpus_per_node"),
            l(4),
            "must be a whole number, found the text `2`",
        ),
        (
            gpus("[2]"),
            f("resources.gpus_per_node"),
            l(4),
            "must be a whole number, found a list",
        ),
        (
            gpus("2\n  nodes: 0"),
            f("resources.nodes"),
            l(5),
            "must be between 1 and 4096",
        ),
        (
            gpus("2\n  nodes: 4097"),
            f("resources.nodes"),
            l(5),
            "must be between 1 and 4096",
        ),
        (
            gpus("2\n  tasks: 4"),
            f("resources.tasks"),
            l(5),
            "only applies to batch jobs",
        ),
        (
            with("kind: training", "kind: batch").replace("gpus_per_node: 2", "gpus_per_node: 2\n  nodes: 1"),
            f("resources.nodes"),
            l(5),
            "only applies to training jobs",
        ),
        (
            with("kind: training", "kind: batch").replace("gpus_per_node: 2", "gpus_per_node: 2\n  tasks: 10001"),
            f("resources.tasks"),
            l(5),
            "must be between 1 and 10000",
        ),
        // GPU models and memory.
        (
            gpus("2\n  gpu_models: [h100, h10]"),
            f("resources.gpu_models[1]"),
            l(5),
            "unknown GPU model `h10`; did you mean",
        ),
        (
            gpus("2\n  gpu_models:\n    - h100\n    - nvidia-h100"),
            f("resources.gpu_models[1]"),
            l(7),
            "H100-80GB-SXM is listed twice",
        ),
        (
            gpus("2\n  gpu_models: h100"),
            f("resources.gpu_models"),
            l(5),
            "must be a list, found the text `h100`",
        ),
        (
            gpus("2\n  gpu_models: [h100]\n  min_vram_gb: 100"),
            f("resources.min_vram_gb"),
            l(6),
            "no model of resources.gpu_models has 100 GiB (largest: H100-80GB-SXM with 80 GiB)",
        ),
        (
            gpus("2\n  min_vram_gb: 4096"),
            f("resources.min_vram_gb"),
            l(5),
            "no GPU model of the catalog has 4096 GiB",
        ),
        (
            gpus("2\n  min_vram_gb: 4097"),
            f("resources.min_vram_gb"),
            l(5),
            "must be between 0 and 4096",
        ),
        // Gangs spanning providers.
        (
            gpus("2\n  cross_provider: {max_latency_ms: 20}"),
            f("resources.cross_provider.max_latency_ms"),
            l(5),
            "only applies to training gangs (nodes > 1)",
        ),
        (
            gpus("2\n  nodes: 2\n  cross_provider:\n    max_latency_ms: 0"),
            f("resources.cross_provider.max_latency_ms"),
            l(7),
            "must be between 1 and 1000",
        ),
        (
            gpus("2\n  nodes: 2\n  cross_provider:\n    max_latency: 20"),
            f("resources.cross_provider.max_latency"),
            l(7),
            "did you mean `max_latency_ms`",
        ),
        (
            gpus("2\n  nodes: 2\n  cross_provider: 20"),
            f("resources.cross_provider"),
            l(6),
            "must be a mapping",
        ),
        (
            format!("{BASE}tier: reserved\n").replace(
                "gpus_per_node: 2",
                "gpus_per_node: 2\n  nodes: 2\n  cross_provider: {max_latency_ms: 5}",
            ),
            f("resources.cross_provider.max_latency_ms"),
            l(6),
            "reserved work runs on its reservation's provider",
        ),
        // Price.
        (
            priced("-1"),
            f("max_price_per_gpu_hour"),
            l(5),
            "must be greater than 0",
        ),
        (priced("0"), f("max_price_per_gpu_hour"), l(5), "must be greater than 0"),
        (
            priced("0.0000001"),
            f("max_price_per_gpu_hour"),
            l(5),
            "must have at most 6 decimals",
        ),
        (
            priced("\"1.1234567\""),
            f("max_price_per_gpu_hour"),
            l(5),
            "must have at most 6 decimals",
        ),
        (
            priced("1000000.01"),
            f("max_price_per_gpu_hour"),
            l(5),
            "must be at most 1000000.00",
        ),
        (
            priced("1e3"),
            f("max_price_per_gpu_hour"),
            l(5),
            "must be a decimal amount such as 2.50, found the number 1e3",
        ),
        (
            priced(".inf"),
            f("max_price_per_gpu_hour"),
            l(5),
            "found the number .inf",
        ),
        (
            gpus("1e400"),
            f("resources.gpus_per_node"),
            l(4),
            "must be a whole number, found the number 1e400",
        ),
        (
            priced("cheap"),
            f("max_price_per_gpu_hour"),
            l(5),
            "must be a decimal amount such as 2.50, found the text `cheap`",
        ),
        (
            priced("true"),
            f("max_price_per_gpu_hour"),
            l(5),
            "found the boolean true",
        ),
        (
            priced(&"9".repeat(40)),
            f("max_price_per_gpu_hour"),
            l(5),
            "must be at most 1000000.00",
        ),
        // Duration.
        (extra("duration: 0\n"), f("duration"), l(7), "must be greater than 0"),
        (extra("duration: -5\n"), f("duration"), l(7), "must be greater than 0"),
        (
            extra("duration: 366d\n"),
            f("duration"),
            l(7),
            "must be at most 365 days",
        ),
        (
            extra("duration: 31536001\n"),
            f("duration"),
            l(7),
            "must be at most 365 days",
        ),
        (
            extra("duration: 99999999999999999999999\n"),
            f("duration"),
            l(7),
            "must be at most 365 days",
        ),
        (
            extra("duration: 30m1h\n"),
            f("duration"),
            l(7),
            "units go from largest to smallest",
        ),
        (
            extra("duration: 1.5h\n"),
            f("duration"),
            l(7),
            "such as 90s, 30m, 2h, 1h30m or 1d",
        ),
        (extra("duration: 2.5\n"), f("duration"), l(7), "such as 90s"),
        // Command, args, workdir.
        (
            with("command: bash", "command: ''"),
            f("command"),
            l(6),
            "must not be empty",
        ),
        (
            with("command: bash", &format!("command: {}", "x".repeat(4097))),
            f("command"),
            l(6),
            "is 4097 bytes; at most 4096",
        ),
        (with("command: bash", "command: \"a\\0b\""), f("command"), l(6), "NUL"),
        (
            extra("args: -c\n"),
            f("args"),
            l(7),
            "must be a list, found the text `-c`",
        ),
        (
            extra("args:\n  - ok\n  - {a: 1}\n"),
            f("args[1]"),
            l(9),
            "must be text, found a mapping",
        ),
        (extra("args: [a, ~]\n"), f("args[1]"), l(7), "must have a value"),
        (
            extra(&format!("args: [{}]\n", vec!["a"; 1025].join(","))),
            f("args"),
            l(7),
            "has 1025 items; at most 1024",
        ),
        (extra("workdir: []\n"), f("workdir"), l(7), "must be text, found a list"),
        (
            extra("tier: gold\n"),
            f("tier"),
            l(7),
            "must be reserved, on-demand or spot, found `gold`",
        ),
        // Env.
        (
            extra("env:\n  FOO: bar\n  CUDA_VISIBLE_DEVICES: \"0\"\n"),
            f("env.CUDA_VISIBLE_DEVICES"),
            l(9),
            "is reserved",
        ),
        (
            extra("env: {AGORA_TOKEN: x}\n"),
            f("env.AGORA_TOKEN"),
            l(7),
            "reserved: the exchange sets AGORA_* variables",
        ),
        (extra("env: {RANK: 0}\n"), f("env.RANK"), l(7), "is reserved"),
        (
            extra("env:\n  1X: y\n"),
            f("env"),
            l(8),
            "`1X` is not a valid variable name",
        ),
        (
            extra("env:\n  FOO:\n"),
            f("env.FOO"),
            l(8),
            "must have a value; write \"\" for an empty one",
        ),
        (
            extra("env:\n  FOO: [a]\n"),
            f("env.FOO"),
            l(8),
            "must be text, found a list",
        ),
        (
            extra("env:\n  FOO: a\n  FOO: b\n"),
            f("env.FOO"),
            l(9),
            "is given twice (first on line 8)",
        ),
        (
            extra("env: [FOO]\n"),
            f("env"),
            l(7),
            "must be a mapping of NAME: value",
        ),
        (
            extra(&format!(
                "env: {{{}}}\n",
                (0..257).map(|i| format!("V{i}: x")).collect::<Vec<_>>().join(", ")
            )),
            f("env"),
            l(7),
            "has 257 variables; at most 256",
        ),
    ]
}

#[test]
fn bad_manifests_name_field_and_line() {
    let mut failures = Vec::new();
    for (yaml, field, line, part) in cases() {
        match Manifest::from_yaml(&yaml) {
            Ok(_) => failures.push(format!("accepted:\n{yaml}")),
            Err(err) => {
                if err.field.as_deref() != field || err.line != line || !err.message.contains(part) {
                    failures.push(format!(
                        "wanted {field:?} line {line:?} `{part}`, got {:?} line {:?} `{}` for:\n{}",
                        err.field,
                        err.line,
                        err.message,
                        yaml.chars().take(300).collect::<String>()
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
