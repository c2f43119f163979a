//! A YAML document as a small tree whose nodes remember their line and, for
//! scalars, the exact text written. The lowering walks this tree itself so every
//! error can name its field and line; serde's generic messages ("invalid type:
//! string, expected u32") name neither.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::budget::BudgetBreach;
use serde_saphyr::{
    DuplicateKeyPolicy, Location, MessageFormatter, NonFiniteFloatPolicy, Spanned, UserMessageFormatter,
};

use super::ManifestError;

/// Deepest nesting accepted. A manifest needs three levels (top, `resources`,
/// `gpu_models`); the limit keeps the recursive tree, including nesting built
/// through aliases, far from the stack's end.
const MAX_DEPTH: usize = 16;

/// One node of the document.
#[derive(Debug)]
pub(super) struct Yaml {
    /// 1-based; where the node is used (for an alias, the alias, not the anchor).
    pub(super) line: Option<u32>,
    pub(super) value: Value,
}

#[derive(Debug)]
pub(super) enum Value {
    /// `~`, `null`, or nothing at all.
    Null,
    Scalar(Scalar),
    Seq(Vec<Yaml>),
    /// Entries in document order; duplicate keys are kept for the lowering to report.
    Map(Vec<(Yaml, Yaml)>),
}

#[derive(Debug)]
pub(super) struct Scalar {
    /// For a string, its value; for a number or boolean, the text as written
    /// (`3.00`, `0x10`), so prices stay exact and `VERSION: 1.10` stays `1.10`.
    pub(super) text: String,
    pub(super) kind: ScalarKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ScalarKind {
    Str,
    /// An integer that fits an i128 (YAML integers beyond u64 arrive as floats).
    Int(i128),
    Float,
    Bool,
}

impl Value {
    /// How a node is described in "found ..." messages.
    pub(super) fn describe(&self) -> String {
        match self {
            Value::Null => "nothing".into(),
            Value::Scalar(s) => match s.kind {
                ScalarKind::Str => format!("the text `{}`", super::shown(&s.text)),
                ScalarKind::Int(_) | ScalarKind::Float => {
                    format!("the number {}", super::shown(&s.text))
                }
                ScalarKind::Bool => format!("the boolean {}", super::shown(&s.text)),
            },
            Value::Seq(_) => "a list".into(),
            Value::Map(_) => "a mapping".into(),
        }
    }
}

/// Parses one YAML document with limits sized for a manifest.
pub(super) fn parse(text: &str) -> Result<Yaml, ManifestError> {
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: MAX_DEPTH,
            // Far above what a valid manifest needs (≤ 1024 args, ≤ 256 env
            // entries); these also count values replayed through aliases, which
            // bounds the memory an alias bomb can take.
            max_nodes: 20_000,
            max_events: 100_000,
            max_total_scalar_bytes: 1024 * 1024,
        },
        // Duplicates reach the lowering, which names the field and both lines.
        duplicate_keys: DuplicateKeyPolicy::PassThrough,
        strict_booleans: true,
        // `.inf` and `1e999` reach the lowering, which names the field they are in
        // (or, in a text field, keeps them as written).
        non_finite_float_policy: NonFiniteFloatPolicy::PassThrough,
        reject_unsupported_tags: true,
    };
    let raw: Spanned<Raw> = serde_saphyr::from_str_with_options(text, options).map_err(yaml_error)?;
    Ok(convert(raw, text))
}

fn yaml_error(err: serde_saphyr::Error) -> ManifestError {
    let line = err.location().and_then(|l| line_of(&l));
    let message = match err.without_snippet() {
        serde_saphyr::Error::MultipleDocuments { .. } => {
            "a manifest is a single YAML document; found several".to_string()
        }
        serde_saphyr::Error::Budget {
            breach: BudgetBreach::Depth { .. },
            ..
        } => {
            format!("the document nests deeper than {MAX_DEPTH} levels")
        }
        serde_saphyr::Error::Budget { .. } => {
            "the document is too complex (too many values, aliases or bytes of text)".to_string()
        }
        other => format!("invalid YAML: {}", UserMessageFormatter.format_message(other)),
    };
    ManifestError::document(line, message)
}

fn line_of(location: &Location) -> Option<u32> {
    u32::try_from(location.line()).ok().filter(|l| *l > 0)
}

/// The exact source text of a plain scalar, when the parser knows where it is.
fn source_text<'s>(source: &'s str, location: &Location) -> Option<&'s str> {
    let span = location.span();
    let start = usize::try_from(span.byte_offset()?).ok()?;
    let len = usize::try_from(span.byte_len()?).ok()?;
    source.get(start..start.checked_add(len)?).filter(|t| !t.is_empty())
}

fn convert(node: Spanned<Raw>, source: &str) -> Yaml {
    let line = line_of(&node.referenced);
    // `defined` is where the scalar is written, also when it is used through an alias.
    let written = |fallback: String| {
        source_text(source, &node.defined)
            .map(str::to_string)
            .unwrap_or(fallback)
    };
    let value = match node.value {
        Raw::Null => Value::Null,
        Raw::Bool(b) => Value::Scalar(Scalar {
            text: written(b.to_string()),
            kind: ScalarKind::Bool,
        }),
        Raw::Int(i) => Value::Scalar(Scalar {
            text: written(i.to_string()),
            kind: ScalarKind::Int(i),
        }),
        Raw::Float(f) => Value::Scalar(Scalar {
            text: written(f.to_string()),
            kind: ScalarKind::Float,
        }),
        Raw::Str(s) => Value::Scalar(Scalar {
            text: s,
            kind: ScalarKind::Str,
        }),
        Raw::Seq(items) => Value::Seq(items.into_iter().map(|n| convert(n, source)).collect()),
        Raw::Map(entries) => Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (convert(k, source), convert(v, source)))
                .collect(),
        ),
    };
    Yaml { line, value }
}

/// What serde-saphyr hands over, before the scalar texts are looked up.
enum Raw {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<Raw>, Spanned<Raw>)>),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Raw, D::Error> {
        deserializer.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw, E> {
        Ok(Raw::Int(v.into()))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Raw, E> {
        // Beyond i128 nothing is in range anyway; keep it as an out-of-range number.
        Ok(i128::try_from(v).map_or(Raw::Float(v as f64), Raw::Int))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Str(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Raw, E> {
        match std::str::from_utf8(v) {
            Ok(s) => Ok(Raw::Str(s.to_string())),
            Err(_) => Err(E::custom("binary data is not valid UTF-8 text")),
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Raw, D::Error> {
        Raw::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Raw::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Raw::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(doc: &Yaml, key: &str) -> (String, ScalarKind) {
        let Value::Map(entries) = &doc.value else {
            panic!("not a map")
        };
        for (k, v) in entries {
            if let (Value::Scalar(k), Value::Scalar(v)) = (&k.value, &v.value)
                && k.text == key
            {
                return (v.text.clone(), v.kind);
            }
        }
        panic!("no scalar {key}")
    }

    #[test]
    fn numbers_keep_the_text_as_written() {
        let doc =
            parse("a: 3.00\nb: 0x10\nc: &x 1.10\nd: *x\ne: '3.5'\nf: yes\ng: true\nh: 99999999999999999999\n").unwrap();
        assert_eq!(scalar(&doc, "a"), ("3.00".into(), ScalarKind::Float));
        assert_eq!(scalar(&doc, "b"), ("0x10".into(), ScalarKind::Int(16)));
        assert_eq!(
            scalar(&doc, "d"),
            ("1.10".into(), ScalarKind::Float),
            "an alias has the anchor's text"
        );
        assert_eq!(scalar(&doc, "e"), ("3.5".into(), ScalarKind::Str));
        assert_eq!(
            scalar(&doc, "f"),
            ("yes".into(), ScalarKind::Str),
            "YAML 1.1 booleans are text"
        );
        assert_eq!(scalar(&doc, "g"), ("true".into(), ScalarKind::Bool));
        assert_eq!(scalar(&doc, "h"), ("99999999999999999999".into(), ScalarKind::Float));
    }

    #[test]
    fn lines_are_one_based() {
        let doc = parse("# comment\na: 1\nb:\n  - x\n").unwrap();
        let Value::Map(entries) = &doc.value else {
            panic!("not a map")
        };
        assert_eq!(entries[0].0.line, Some(2));
        assert_eq!(entries[1].0.line, Some(3));
        let Value::Seq(items) = &entries[1].1.value else {
            panic!("not a seq")
        };
        assert_eq!(items[0].line, Some(4));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let flow = |n: usize| format!("a: {}1{}\n", "[".repeat(n), "]".repeat(n));
        let err = parse(&flow(20)).unwrap_err();
        assert_eq!(err.to_string(), "line 1: the document nests deeper than 16 levels");
        // Past the parser's own flow limit the parser stops first.
        let err = parse(&flow(10_000)).unwrap_err();
        assert_eq!(err.to_string(), "line 1: invalid YAML: recursion limit exceeded");
        let block: String = (0..200).map(|i| format!("{}k{i}:\n", "  ".repeat(i))).collect();
        let err = parse(&block).unwrap_err();
        assert_eq!(err.message, "the document nests deeper than 16 levels");
    }

    #[test]
    fn alias_bombs_hit_the_budget() {
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            doc.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n",
                p = i - 1
            ));
        }
        let err = parse(&doc).unwrap_err();
        assert!(err.message.contains("too complex"), "{err}");
    }
}
