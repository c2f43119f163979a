//! Lowering: from the YAML tree to a [`Manifest`], checking shapes and types,
//! resolving names and filling defaults. Range rules live in
//! [`Manifest::validate`], which runs next; [`Lines`] lets its errors point back
//! into the document.

use std::collections::BTreeMap;

use agora_types::{GpuModel, JobKind, Micros, ParseMoneyError, PricePerGpuHour, Tier};

use super::tree::{ScalarKind, Value, Yaml};
use super::{
    DURATION_MAX_S, GPUS_PER_NODE, MAX_LATENCY_MS, MIB_PER_GIB, MIN_VRAM_GIB_MAX, Manifest, ManifestError, NODES,
    PRICE_MAX_UNITS, Resources, TASKS, between, shown,
};

const TOP_FIELDS: &[&str] = &[
    "name",
    "kind",
    "resources",
    "tier",
    "max_price_per_gpu_hour",
    "duration",
    "command",
    "args",
    "env",
    "workdir",
    "checkpointable",
];
const RESOURCE_FIELDS: &[&str] = &[
    "gpus_per_node",
    "nodes",
    "tasks",
    "gpu_models",
    "min_vram_gb",
    "cross_provider",
];
const CROSS_PROVIDER_FIELDS: &[&str] = &["max_latency_ms"];

/// Where each field of the document is written, by dotted path.
#[derive(Debug, Default)]
pub(super) struct Lines(BTreeMap<String, u32>);

impl Lines {
    fn record(&mut self, path: &str, line: Option<u32>) {
        if let Some(line) = line {
            self.0.insert(path.to_string(), line);
        }
    }

    /// Turns an error of [`Manifest::validate`] into one about the document: the
    /// YAML field name and the line of that field, or of its closest written parent.
    pub(super) fn locate(&self, err: ManifestError) -> ManifestError {
        let Some(field) = err.field.as_deref() else {
            return err;
        };
        let field = match field {
            "duration_estimate_s" => "duration".to_string(),
            "resources.min_vram_mib" => "resources.min_vram_gb".to_string(),
            "resources.cross_provider_max_latency_ms" => "resources.cross_provider.max_latency_ms".to_string(),
            other => other.to_string(),
        };
        let mut path = field.as_str();
        let line = loop {
            if let Some(line) = self.0.get(path) {
                break Some(*line);
            }
            match path.rfind(['.', '[']) {
                Some(cut) => path = &path[..cut],
                None => break None,
            }
        };
        ManifestError {
            field: Some(field),
            line,
            message: err.message,
        }
    }
}

/// Builds the manifest; the caller validates it.
pub(super) fn lower(doc: &Yaml) -> Result<(Manifest, Lines), ManifestError> {
    let mut lines = Lines::default();
    match &doc.value {
        Value::Map(_) => {}
        Value::Null => return Err(ManifestError::document(None, "the manifest is empty")),
        other => {
            return Err(ManifestError::document(
                doc.line,
                format!("the manifest must be a mapping of fields, found {}", other.describe()),
            ));
        }
    }
    let document = Field {
        path: String::new(),
        line: None,
        node: doc,
    };
    let mut top = Fields::of(&document, TOP_FIELDS, &mut lines)?;
    let name = top.required("name")?.text()?;
    let kind_field = top.required("kind")?;
    let kind = match kind_field.text()?.as_str() {
        "training" => JobKind::Training,
        "batch" => JobKind::Batch,
        "service" => JobKind::Service,
        other => {
            return Err(kind_field.error(format!("must be training, batch or service, found `{}`", shown(other))));
        }
    };
    let resources = resources(&top.required("resources")?, kind, &mut lines)?;
    let tier = match top.optional("tier") {
        None => Tier::OnDemand,
        Some(field) => match field.text()?.as_str() {
            "reserved" => Tier::Reserved,
            "on-demand" => Tier::OnDemand,
            "spot" => Tier::Spot,
            other => {
                return Err(field.error(format!("must be reserved, on-demand or spot, found `{}`", shown(other))));
            }
        },
    };
    // Reserved work is paid for by its contract: a bid is optional there.
    let max_price_per_gpu_hour = match (tier, top.optional("max_price_per_gpu_hour")) {
        (_, Some(field)) => price(&field)?,
        (Tier::Reserved, None) => PricePerGpuHour(Micros::ZERO),
        (_, None) => price(&top.required("max_price_per_gpu_hour")?)?,
    };
    let duration_estimate_s = top.optional("duration").map(|f| duration(&f)).transpose()?;
    let command = top.required("command")?.text()?;
    let args = match top.optional("args") {
        None => Vec::new(),
        Some(field) => field
            .items(&mut lines)?
            .iter()
            .map(Field::text)
            .collect::<Result<_, _>>()?,
    };
    let env = match top.optional("env") {
        None => BTreeMap::new(),
        Some(field) => env(&field, &mut lines)?,
    };
    let workdir = top.optional("workdir").map(|f| f.text()).transpose()?;
    let checkpointable = top
        .optional("checkpointable")
        .map(|f| f.flag())
        .transpose()?
        .unwrap_or(false);
    let manifest = Manifest {
        name,
        kind,
        resources,
        tier,
        max_price_per_gpu_hour,
        duration_estimate_s,
        command,
        args,
        env,
        workdir,
        checkpointable,
    };
    Ok((manifest, lines))
}

fn resources(field: &Field<'_>, kind: JobKind, lines: &mut Lines) -> Result<Resources, ManifestError> {
    let mut r = Fields::of(field, RESOURCE_FIELDS, lines)?;
    let gpus_per_node = r.required("gpus_per_node")?.count(GPUS_PER_NODE)?;
    let nodes = match r.optional("nodes") {
        Some(f) if kind == JobKind::Batch => {
            return Err(f.error("only applies to training jobs; a batch job runs `tasks` tasks of one node each"));
        }
        Some(f) => f.count(NODES)?,
        None => 1,
    };
    let tasks = match r.optional("tasks") {
        Some(f) if kind == JobKind::Training => {
            return Err(f.error("only applies to batch jobs; a training job runs on `nodes` nodes"));
        }
        Some(f) => f.count(TASKS)?,
        None => 1,
    };
    let gpu_models = match r.optional("gpu_models") {
        None => Vec::new(),
        Some(f) => f
            .items(lines)?
            .iter()
            .map(|item| GpuModel::resolve(&item.text()?).map_err(|e| item.error(e.to_string())))
            .collect::<Result<_, _>>()?,
    };
    let min_vram_mib = match r.optional("min_vram_gb") {
        None => 0,
        Some(f) => f.count((0, MIN_VRAM_GIB_MAX))? * MIB_PER_GIB,
    };
    // `validate` says where it applies.
    let cross_provider_max_latency_ms = match r.optional("cross_provider") {
        None => None,
        Some(f) => Some(
            Fields::of(&f, CROSS_PROVIDER_FIELDS, lines)?
                .required("max_latency_ms")?
                .count(MAX_LATENCY_MS)?,
        ),
    };
    Ok(Resources {
        gpus_per_node,
        nodes,
        tasks,
        gpu_models,
        min_vram_mib,
        cross_provider_max_latency_ms,
    })
}

fn env(field: &Field<'_>, lines: &mut Lines) -> Result<BTreeMap<String, String>, ManifestError> {
    let Value::Map(entries) = &field.node.value else {
        return Err(field.error(format!(
            "must be a mapping of NAME: value, found {}",
            field.node.value.describe()
        )));
    };
    let mut env = BTreeMap::new();
    let mut seen: BTreeMap<String, Option<u32>> = BTreeMap::new();
    for (key, value) in entries {
        let name = key_text(key, &field.path)?;
        // Names are checked here, before they become part of a path.
        super::check_env_name(&name).map_err(|m| field.error(m).at(key.line))?;
        let item = Field {
            path: format!("{}.{name}", field.path),
            line: key.line,
            node: value,
        };
        if let Some(first) = seen.insert(name.clone(), key.line) {
            return Err(item.error(given_twice(first)));
        }
        lines.record(&item.path, item.line);
        let text = match &value.value {
            Value::Null => return Err(item.error("must have a value; write \"\" for an empty one")),
            _ => item.text()?,
        };
        env.insert(name, text);
    }
    Ok(env)
}

fn price(field: &Field<'_>) -> Result<PricePerGpuHour, ManifestError> {
    let not_decimal = || {
        field.error(format!(
            "must be a decimal amount such as 2.50, found {}",
            field.node.value.describe()
        ))
    };
    let text = match &field.node.value {
        Value::Scalar(s) if s.kind != ScalarKind::Bool => &s.text,
        _ => return Err(not_decimal()),
    };
    match Micros::parse_decimal(text) {
        Ok(micros) => Ok(PricePerGpuHour(micros)),
        Err(ParseMoneyError::Invalid(_)) => Err(not_decimal()),
        Err(ParseMoneyError::TooPrecise(_)) => Err(field.error("must have at most 6 decimals")),
        Err(ParseMoneyError::TooLarge(_)) => {
            Err(field.error(format!("must be at most {}", Micros::from_units(PRICE_MAX_UNITS))))
        }
    }
}

fn duration(field: &Field<'_>) -> Result<u64, ManifestError> {
    let Value::Scalar(s) = &field.node.value else {
        return Err(field.error(format!("{DURATION_FORMS}, found {}", field.node.value.describe())));
    };
    match s.kind {
        ScalarKind::Int(seconds) if seconds <= 0 => Err(field.error("must be greater than 0")),
        ScalarKind::Int(seconds) => u64::try_from(seconds)
            .ok()
            .filter(|s| *s <= DURATION_MAX_S)
            .ok_or_else(|| field.error("must be at most 365 days")),
        ScalarKind::Float if integer_literal(&s.text) => Err(field.error(if s.text.starts_with('-') {
            "must be greater than 0"
        } else {
            "must be at most 365 days"
        })),
        ScalarKind::Str => parse_duration(&s.text).map_err(|m| field.error(m)),
        ScalarKind::Float | ScalarKind::Bool => {
            Err(field.error(format!("{DURATION_FORMS}, found {}", field.node.value.describe())))
        }
    }
}

const DURATION_FORMS: &str = "must be whole seconds or a duration such as 90s, 30m, 2h, 1h30m or 1d";

/// Seconds of `5400`, `90s`, `30m`, `2h`, `1h30m`, `1d`...: units largest first,
/// each at most once. The result is checked to be within (0, 365 days].
pub fn parse_duration(text: &str) -> Result<u64, String> {
    const UNITS: [(char, u64); 4] = [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)];
    let bad = || format!("{DURATION_FORMS}, found `{}`", shown(text));
    let too_long = || "must be at most 365 days".to_string();
    if text.is_empty() {
        return Err(bad());
    }
    let seconds = if text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse::<u64>().map_err(|_| too_long())?
    } else {
        let mut total: u64 = 0;
        let mut rest = text;
        // Index into UNITS of the next unit allowed: each component must use a
        // smaller unit than the one before it.
        let mut next_unit = 0;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            let unit = rest[digits..].chars().next().ok_or_else(bad)?;
            if digits == 0 {
                return Err(bad());
            }
            let position = UNITS.iter().position(|(u, _)| *u == unit).ok_or_else(bad)?;
            if position < next_unit {
                return Err(format!(
                    "`{}`: units go from largest to smallest, each at most once",
                    shown(text)
                ));
            }
            next_unit = position + 1;
            let count: u64 = rest[..digits].parse().map_err(|_| too_long())?;
            let part = count.checked_mul(UNITS[position].1).ok_or_else(too_long)?;
            total = total.checked_add(part).ok_or_else(too_long)?;
            rest = &rest[digits + unit.len_utf8()..];
        }
        total
    };
    super::check_duration(seconds)?;
    Ok(seconds)
}

/// Whether a number was written as an integer (one too large for the tree's i128).
fn integer_literal(text: &str) -> bool {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit() || b == b'_')
}

fn given_twice(first_line: Option<u32>) -> String {
    match first_line {
        Some(line) => format!("is given twice (first on line {line})"),
        None => "is given twice".to_string(),
    }
}

/// A mapping key as text.
fn key_text(key: &Yaml, parent: &str) -> Result<String, ManifestError> {
    match &key.value {
        Value::Scalar(s) => Ok(s.text.clone()),
        other => Err(ManifestError {
            field: (!parent.is_empty()).then(|| parent.to_string()),
            line: key.line,
            message: format!("keys must be names, found {}", other.describe()),
        }),
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// The fields of one mapping of the document, each known field at most once.
struct Fields<'a> {
    path: String,
    line: Option<u32>,
    found: BTreeMap<&'static str, Field<'a>>,
}

impl<'a> Fields<'a> {
    /// The fields of the mapping `field`; a missing one is reported on `field`'s line.
    fn of(field: &Field<'a>, known: &[&'static str], lines: &mut Lines) -> Result<Fields<'a>, ManifestError> {
        let path = field.path.as_str();
        let Value::Map(entries) = &field.node.value else {
            return Err(field.error(format!("must be a mapping, found {}", field.node.value.describe())));
        };
        let mut found = BTreeMap::new();
        for (key, value) in entries {
            let name = key_text(key, path)?;
            let Some(known_name) = known.iter().copied().find(|k| *k == name) else {
                return Err(ManifestError::new(join(path, &shown(&name)), unknown_field(&name, known)).at(key.line));
            };
            let field = Field {
                path: join(path, known_name),
                line: key.line,
                node: value,
            };
            if let Some(first) = found.get(known_name).map(|f: &Field<'_>| f.line) {
                return Err(field.error(given_twice(first)));
            }
            lines.record(&field.path, field.line);
            found.insert(known_name, field);
        }
        Ok(Fields {
            path: path.to_string(),
            line: field.line,
            found,
        })
    }

    /// A field that is given and not null.
    fn optional(&mut self, name: &'static str) -> Option<Field<'a>> {
        self.found.remove(name).filter(|f| !matches!(f.node.value, Value::Null))
    }

    fn required(&mut self, name: &'static str) -> Result<Field<'a>, ManifestError> {
        match self.found.remove(name) {
            Some(f) if matches!(f.node.value, Value::Null) => Err(f.error("must have a value")),
            Some(f) => Ok(f),
            // Point at the enclosing field; a missing top-level field has no line.
            None if self.path.is_empty() => Err(ManifestError::new(name, "is required")),
            None => Err(ManifestError::new(join(&self.path, name), "is required").at(self.line)),
        }
    }
}

fn unknown_field(name: &str, known: &[&str]) -> String {
    let closest = known
        .iter()
        .map(|k| (agora_types::edit_distance(&name.to_ascii_lowercase(), k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min();
    let valid = known.join(", ");
    match closest {
        Some((_, k)) => format!("unknown field; did you mean `{k}`? (valid fields: {valid})"),
        None => format!("unknown field (valid fields: {valid})"),
    }
}

/// One field or list item of the document, with its path and line.
struct Field<'a> {
    path: String,
    line: Option<u32>,
    node: &'a Yaml,
}

impl Field<'_> {
    fn error(&self, message: impl Into<String>) -> ManifestError {
        ManifestError::new(self.path.clone(), message).at(self.line)
    }

    /// Any scalar, as text; numbers and booleans as written.
    fn text(&self) -> Result<String, ManifestError> {
        match &self.node.value {
            Value::Scalar(s) => Ok(s.text.clone()),
            Value::Null => Err(self.error("must have a value")),
            other => Err(self.error(format!("must be text, found {}", other.describe()))),
        }
    }

    /// A YAML boolean (`true` or `false`).
    fn flag(&self) -> Result<bool, ManifestError> {
        match &self.node.value {
            Value::Scalar(s) if s.kind == ScalarKind::Bool => Ok(s.text == "true"),
            other => Err(self.error(format!("must be true or false, found {}", other.describe()))),
        }
    }

    /// A YAML integer within `min..=max`.
    fn count(&self, (min, max): (u32, u32)) -> Result<u32, ManifestError> {
        let out_of_range = || self.error(between(min, max));
        match &self.node.value {
            Value::Scalar(s) => match s.kind {
                ScalarKind::Int(v) => u32::try_from(v)
                    .ok()
                    .filter(|v| (min..=max).contains(v))
                    .ok_or_else(out_of_range),
                ScalarKind::Float if integer_literal(&s.text) => Err(out_of_range()),
                _ => Err(self.error(format!("must be a whole number, found {}", self.node.value.describe()))),
            },
            other => Err(self.error(format!("must be a whole number, found {}", other.describe()))),
        }
    }

    /// The items of a list, each as a field `path[i]`.
    fn items(&self, lines: &mut Lines) -> Result<Vec<Field<'_>>, ManifestError> {
        let Value::Seq(items) = &self.node.value else {
            return Err(self.error(format!("must be a list, found {}", self.node.value.describe())));
        };
        Ok(items
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let item = Field {
                    path: format!("{}[{i}]", self.path),
                    line: node.line,
                    node,
                };
                lines.record(&item.path, item.line);
                item
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_form() {
        for (text, seconds) in [
            ("5400", 5400),
            ("90s", 90),
            ("30m", 1800),
            ("2h", 7200),
            ("1h30m", 5400),
            ("1d", 86_400),
            ("1d2h3m4s", 93_784),
            ("90m", 5400),
            ("365d", 365 * 86_400),
        ] {
            assert_eq!(parse_duration(text), Ok(seconds), "{text}");
        }
    }

    #[test]
    fn bad_durations() {
        for (text, wanted) in [
            ("", "such as"),
            ("h", "such as"),
            ("1.5h", "such as"),
            ("1 h", "such as"),
            ("2H", "such as"),
            ("1w", "such as"),
            ("30m1h", "largest to smallest"),
            ("1h1h", "largest to smallest"),
            ("0s", "greater than 0"),
            ("0", "greater than 0"),
            ("366d", "at most 365 days"),
            ("99999999999999999999999s", "at most 365 days"),
            ("9999999999999999d", "at most 365 days"),
            ("-5", "such as"),
        ] {
            let err = parse_duration(text).unwrap_err();
            assert!(err.contains(wanted), "{text}: {err}");
        }
    }

    #[test]
    fn typos_get_a_suggestion() {
        assert!(unknown_field("gpu_per_node", RESOURCE_FIELDS).contains("did you mean `gpus_per_node`?"));
        assert!(unknown_field("comand", TOP_FIELDS).contains("did you mean `command`?"));
        assert!(unknown_field("min_vram_mib", RESOURCE_FIELDS).contains("did you mean `min_vram_gb`?"));
        assert!(!unknown_field("zzzz", TOP_FIELDS).contains("did you mean"));
    }
}
