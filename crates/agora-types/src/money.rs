//! Money as integer micro-units (1 unit = 1,000,000 micros), never floats.

use serde::{Deserialize, Serialize};

pub const MICROS_PER_UNIT: i128 = 1_000_000;

/// An amount of money in micro-units of the exchange's currency.
///
/// It serializes as a plain JSON integer when it fits in 64 bits (every real
/// amount: 2^63 micros is 9.2 trillion units), else as a string of digits,
/// because serde's buffering of tagged enums cannot carry 128-bit integers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Micros(pub i128);

impl Serialize for Micros {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match i64::try_from(self.0) {
            Ok(v) => s.serialize_i64(v),
            Err(_) => s.serialize_str(&self.0.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Micros {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Micros;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an integer amount of micro-units")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Micros, E> {
                Ok(Micros(v.into()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Micros, E> {
                Ok(Micros(v.into()))
            }
            fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<Micros, E> {
                Ok(Micros(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Micros, E> {
                v.parse()
                    .map(Micros)
                    .map_err(|_| E::custom(format!("`{v}` is not an integer amount of micro-units")))
            }
            fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<Micros, E> {
                i128::try_from(v)
                    .map(Micros)
                    .map_err(|_| E::custom("amount out of range"))
            }
        }
        d.deserialize_any(V)
    }
}

impl Micros {
    pub const ZERO: Micros = Micros(0);

    pub fn from_units(units: i64) -> Micros {
        Micros(units as i128 * MICROS_PER_UNIT)
    }

    /// Parses a decimal amount such as `2.5`, `3.10` or `100` into micros.
    /// More than six decimals is an error, never a silent rounding.
    pub fn parse_decimal(text: &str) -> Result<Micros, ParseMoneyError> {
        let t = text.trim();
        let (negative, digits) = match t.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, t.strip_prefix('+').unwrap_or(t)),
        };
        let (whole, frac) = match digits.split_once('.') {
            Some((w, f)) => (w, f),
            None => (digits, ""),
        };
        let bad = || ParseMoneyError::Invalid(t.to_string());
        if whole.is_empty() && frac.is_empty() {
            return Err(bad());
        }
        if !whole.chars().all(|c| c.is_ascii_digit()) || !frac.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        if frac.len() > 6 {
            return Err(ParseMoneyError::TooPrecise(t.to_string()));
        }
        if whole.len() > 24 {
            return Err(ParseMoneyError::TooLarge(t.to_string()));
        }
        let whole_v: i128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        let mut frac_v: i128 = if frac.is_empty() {
            0
        } else {
            frac.parse().map_err(|_| bad())?
        };
        for _ in frac.len()..6 {
            frac_v *= 10;
        }
        let v = whole_v * MICROS_PER_UNIT + frac_v;
        Ok(Micros(if negative { -v } else { v }))
    }

    pub fn is_negative(self) -> bool {
        self.0 < 0
    }
}

impl std::ops::Add for Micros {
    type Output = Micros;
    fn add(self, rhs: Micros) -> Micros {
        Micros(self.0 + rhs.0)
    }
}

impl std::ops::Sub for Micros {
    type Output = Micros;
    fn sub(self, rhs: Micros) -> Micros {
        Micros(self.0 - rhs.0)
    }
}

impl std::ops::AddAssign for Micros {
    fn add_assign(&mut self, rhs: Micros) {
        self.0 += rhs.0;
    }
}

impl std::ops::SubAssign for Micros {
    fn sub_assign(&mut self, rhs: Micros) {
        self.0 -= rhs.0;
    }
}

/// Prints as a decimal amount with trailing zeros trimmed to at least two decimals: `2.50`, `0.000001`.
impl std::fmt::Display for Micros {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let whole = abs / MICROS_PER_UNIT as u128;
        let frac = abs % MICROS_PER_UNIT as u128;
        let mut frac_s = format!("{frac:06}");
        while frac_s.len() > 2 && frac_s.ends_with('0') {
            frac_s.pop();
        }
        write!(f, "{sign}{whole}.{frac_s}")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseMoneyError {
    #[error("`{0}` is not a decimal amount")]
    Invalid(String),
    #[error("`{0}` has more than 6 decimals")]
    TooPrecise(String),
    #[error("`{0}` is too large")]
    TooLarge(String),
}

/// A price in micros per GPU-hour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct PricePerGpuHour(pub Micros);

impl PricePerGpuHour {
    pub fn micros(self) -> i128 {
        self.0.0
    }

    /// Cost of `gpus` GPUs for `seconds` seconds, rounded down to the micro.
    /// Cumulative settlement always calls this on the total elapsed time, so
    /// rounding never accumulates across settlements.
    pub fn cost(self, gpus: u32, seconds: i64) -> Micros {
        let seconds = seconds.max(0) as i128;
        Micros(self.0.0 * gpus as i128 * seconds / 3600)
    }
}

impl std::fmt::Display for PricePerGpuHour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/GPU-h", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        for (text, micros, shown) in [
            ("2.5", 2_500_000, "2.50"),
            ("3.10", 3_100_000, "3.10"),
            ("100", 100_000_000, "100.00"),
            ("0.000001", 1, "0.000001"),
            ("-1.25", -1_250_000, "-1.25"),
            (".5", 500_000, "0.50"),
        ] {
            let m = Micros::parse_decimal(text).unwrap();
            assert_eq!(m, Micros(micros), "{text}");
            assert_eq!(m.to_string(), shown, "{text}");
        }
    }

    #[test]
    fn parse_rejects_garbage_and_extra_precision() {
        assert!(matches!(Micros::parse_decimal("abc"), Err(ParseMoneyError::Invalid(_))));
        assert!(matches!(
            Micros::parse_decimal("1.2.3"),
            Err(ParseMoneyError::Invalid(_))
        ));
        assert!(matches!(Micros::parse_decimal(""), Err(ParseMoneyError::Invalid(_))));
        assert!(matches!(
            Micros::parse_decimal("0.0000001"),
            Err(ParseMoneyError::TooPrecise(_))
        ));
    }

    #[test]
    fn serializes_as_a_plain_integer_even_inside_tagged_enums() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        #[serde(tag = "type")]
        enum Tagged {
            Paid { amount: Micros },
        }
        let v = Tagged::Paid {
            amount: Micros(-2_500_000),
        };
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(json, r#"{"type":"Paid","amount":-2500000}"#);
        assert_eq!(serde_json::from_str::<Tagged>(&json).unwrap(), v);
        let huge = Micros(i128::from(i64::MAX) * 4);
        assert_eq!(
            serde_json::from_str::<Micros>(&serde_json::to_string(&huge).unwrap()).unwrap(),
            huge
        );
    }

    #[test]
    fn cost_is_exact_on_the_cumulative_total() {
        let p = PricePerGpuHour(Micros::parse_decimal("2.50").unwrap());
        assert_eq!(p.cost(2, 3600), Micros(5_000_000));
        assert_eq!(p.cost(1, 1), Micros(694)); // 2,500,000 / 3600 = 694.44
        assert_eq!(p.cost(8, 0), Micros::ZERO);
    }
}
