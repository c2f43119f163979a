//! The region latency matrix that bounds gangs spanning providers, read from
//! the file an operator gives `agora serve --latency-matrix`.
//!
//! One pair per line, `region_a,region_b,milliseconds` (round trip, either
//! way round); blank lines and lines starting with `#` are skipped. A region
//! is 0 ms from itself unless a line says otherwise; a pair that no line
//! gives is unknown, and no gang spans it. Region names are those agents
//! give their sites (`region:` in the agent's configuration).
//!
//! ```text
//! # region_a, region_b, ms
//! eu-west, eu-central, 12
//! eu-west, us-east, 75
//! ```

use std::collections::BTreeMap;

use thiserror::Error;

use crate::events::RegionLatency;

/// The most pairs a matrix may give (a full matrix of 400 regions).
pub const MAX_PAIRS: usize = 80_000;
/// The longest region name.
pub const MAX_REGION_BYTES: usize = 64;
/// The highest latency a pair may have, in milliseconds.
pub const MAX_LATENCY_MS: u32 = 10_000;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("latency matrix, line {line}: {message}")]
pub struct LatencyMatrixError {
    pub line: usize,
    pub message: String,
}

/// Parses a matrix; the pairs come out sorted, each once as (lower, higher name).
pub fn parse(text: &str) -> Result<Vec<RegionLatency>, LatencyMatrixError> {
    let mut pairs: BTreeMap<(String, String), (u32, usize)> = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let err = |message: String| LatencyMatrixError { line, message };
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = trimmed.split(',').map(str::trim).collect();
        let [a, b, ms] = fields[..] else {
            return Err(err(format!(
                "expected `region_a,region_b,milliseconds`, found {} fields",
                fields.len()
            )));
        };
        for region in [a, b] {
            if region.is_empty() || region.len() > MAX_REGION_BYTES {
                return Err(err(format!(
                    "a region name must have 1 to {MAX_REGION_BYTES} bytes, found `{region}`"
                )));
            }
        }
        let ms: u32 = ms.parse().ok().filter(|ms| *ms <= MAX_LATENCY_MS).ok_or_else(|| {
            err(format!(
                "milliseconds must be a whole number from 0 to {MAX_LATENCY_MS}, found `{ms}`"
            ))
        })?;
        let key = if a <= b {
            (a.to_string(), b.to_string())
        } else {
            (b.to_string(), a.to_string())
        };
        match pairs.get(&key) {
            Some(&(earlier, first)) if earlier != ms => {
                return Err(err(format!(
                    "{a} – {b} is {ms} ms here but {earlier} ms on line {first}"
                )));
            }
            Some(_) => {}
            None => {
                if pairs.len() == MAX_PAIRS {
                    return Err(err(format!("more than {MAX_PAIRS} pairs")));
                }
                pairs.insert(key, (ms, line));
            }
        }
    }
    Ok(pairs
        .into_iter()
        .map(|((a, b), (ms, _))| RegionLatency { a, b, ms })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_read_either_way_round_with_comments_and_blanks_skipped() {
        let pairs =
            parse("# a matrix\n\nus-east, eu-west, 75\neu-west,eu-central,12\neu-central,eu-west,12\n").unwrap();
        let got: Vec<(&str, &str, u32)> = pairs.iter().map(|p| (p.a.as_str(), p.b.as_str(), p.ms)).collect();
        assert_eq!(got, [("eu-central", "eu-west", 12), ("eu-west", "us-east", 75)]);
    }

    #[test]
    fn each_mistake_names_its_line() {
        let cases = [
            ("a,b\n", 1, "found 2 fields"),
            ("# c\na,b,x\n", 2, "found `x`"),
            ("a,b,10001\n", 1, "from 0 to 10000"),
            ("a,,3\n", 1, "region name"),
            ("a,b,3\nb,a,4\n", 2, "4 ms here but 3 ms on line 1"),
        ];
        for (text, line, needle) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.to_string().contains(needle), "{text:?}: {e}");
        }
    }
}
