//! Migration versions. Most tools number migrations with one whole number (`20250101120000`: sqlx,
//! golang-migrate, dbmate, diesel); Flyway also has dotted versions (`1.2.3`, `2024.01.15.1`, `1_1`).
//! A [`Version`] holds either, ordered as Flyway orders them: part by part, numerically, a missing part
//! counting as zero (`1` = `1.0` < `1.0.1` < `1.2` < `1.10` < `2`). A whole number is the one-part case,
//! so every history orders as before.
//!
//! The text of a version is canonical: parts without leading zeros, joined by `.`, with trailing zero
//! parts dropped (`V01.2.0__x.sql` is version `1.2`). That text is what the ledger and status hold.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A migration version; see the module documentation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version(Box<[i64]>);

/// What is wrong with a version's text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("the version is empty")]
    Empty,
    #[error("the version {text:?} holds {bad:?}; a version is digits{}", if *.dotted { ", parts separated by `.` or `_`" } else { " only" })]
    NotDigits {
        text: String,
        bad: char,
        dotted: bool,
    },
    #[error("the version {text:?} has an empty part; parts are digits separated by one `.` or `_`")]
    EmptyPart { text: String },
    #[error("the version {text} is larger than {}", i64::MAX)]
    TooLarge { text: String },
    #[error("a version is not negative ({value})")]
    Negative { value: i64 },
}

impl Version {
    /// A whole-number version (`0` included).
    pub fn whole(value: i64) -> Result<Self, VersionError> {
        if value < 0 {
            return Err(VersionError::Negative { value });
        }
        Ok(Self(Box::new([value])))
    }

    /// A whole-number version written as digits only (sqlx, golang-migrate, dbmate, diesel names).
    pub fn parse_whole(text: &str) -> Result<Self, VersionError> {
        if text.is_empty() {
            return Err(VersionError::Empty);
        }
        if let Some(bad) = text.chars().find(|c| !c.is_ascii_digit()) {
            return Err(VersionError::NotDigits {
                text: text.into(),
                bad,
                dotted: false,
            });
        }
        Self::part(text, text).map(|p| Self(Box::new([p])))
    }

    /// A version as Flyway writes it: digits, parts separated by `.` or `_` (`1.2.3`, `1_1`, `7`).
    pub fn parse_dotted(text: &str) -> Result<Self, VersionError> {
        if text.is_empty() {
            return Err(VersionError::Empty);
        }
        if let Some(bad) = text
            .chars()
            .find(|c| !c.is_ascii_digit() && *c != '.' && *c != '_')
        {
            return Err(VersionError::NotDigits {
                text: text.into(),
                bad,
                dotted: true,
            });
        }
        let mut parts = text
            .split(['.', '_'])
            .map(|p| {
                if p.is_empty() {
                    Err(VersionError::EmptyPart { text: text.into() })
                } else {
                    Self::part(p, text)
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        while parts.len() > 1 && parts.last() == Some(&0) {
            parts.pop();
        }
        Ok(Self(parts.into_boxed_slice()))
    }

    fn part(digits: &str, text: &str) -> Result<i64, VersionError> {
        digits
            .parse()
            .map_err(|_| VersionError::TooLarge { text: text.into() })
    }

    /// The version as one whole number, when it is one (every version but a dotted one).
    pub fn as_whole(&self) -> Option<i64> {
        match &*self.0 {
            [only] => Some(*only),
            _ => None,
        }
    }

    /// Whether the version has more than one part (`1.2`), which a `bigint` ledger column cannot hold.
    pub fn is_dotted(&self) -> bool {
        self.0.len() > 1
    }
}

/// Version 0.
impl Default for Version {
    fn default() -> Self {
        Self(Box::new([0]))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, part) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{part}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Version {
    type Err = VersionError;

    /// Reads a whole number or a dotted version.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_dotted(s)
    }
}

/// Written as its canonical text (`"20250101120000"`, `"1.2.3"`): one JSON type for every version, so a
/// printer column shows each.
impl Serialize for Version {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Read from a JSON integer (`5`, as written before dotted versions existed) or string (`"1.2.3"`).
impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Int(v) => Version::whole(v),
            Raw::Text(t) => t.parse(),
        }
        .map_err(serde::de::Error::custom)
    }
}

/// The pattern of a version's text, for the CRD schema.
pub const PATTERN: &str = r"^[0-9]+([._][0-9]+)*$";

/// In status a version is a string (see [`Serialize`]).
impl JsonSchema for Version {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Version".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": PATTERN,
        })
    }

    fn inline_schema() -> bool {
        true
    }
}

/// The schema of a version a person writes in a spec: a whole number (`20250101120000`) or a string
/// (`"1.2.3"`), checked by the API server.
pub fn spec_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "x-kubernetes-int-or-string": true,
        "x-kubernetes-validations": [{
            "rule": "type(self) == int ? self >= 0 : self.matches('^[0-9]+([._][0-9]+)*$')",
            "message": "a version is a whole number (20250101120000) or Flyway's dotted form as a string (\"1.2.3\")",
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn versions_order_as_flyway_orders_them() {
        let ordered = [
            "0",
            "0.1",
            "1",
            "1.0.1",
            "1.2",
            "1.9",
            "1.10",
            "2",
            "10",
            "2024.1.15.1",
        ];
        for pair in ordered.windows(2) {
            assert!(v(pair[0]) < v(pair[1]), "{} < {}", pair[0], pair[1]);
        }
        assert_eq!(v("1"), v("1.0"));
        assert_eq!(v("1.0.0"), v("1"));
        assert_eq!(v("1_1"), v("1.1"));
        assert_eq!(v("01.02").to_string(), "1.2");
        assert_eq!(v("0.0").to_string(), "0");
        assert_eq!(v("1.2.0").to_string(), "1.2");
    }

    #[test]
    fn whole_numbers_stay_whole() {
        let w = Version::parse_whole("20250101120000").unwrap();
        assert_eq!(w.as_whole(), Some(20_250_101_120_000));
        assert!(!w.is_dotted());
        assert!(v("1.2").is_dotted());
        assert_eq!(v("1.2").as_whole(), None);
        assert_eq!(Version::whole(0).unwrap().to_string(), "0");
        assert_eq!(
            Version::whole(-1),
            Err(VersionError::Negative { value: -1 })
        );
    }

    #[test]
    fn bad_versions_say_what_is_wrong() {
        assert_eq!(
            Version::parse_whole("v1").unwrap_err().to_string(),
            "the version \"v1\" holds 'v'; a version is digits only"
        );
        assert_eq!(
            Version::parse_whole("1.2").unwrap_err().to_string(),
            "the version \"1.2\" holds '.'; a version is digits only"
        );
        assert_eq!(
            Version::parse_dotted("1..2").unwrap_err().to_string(),
            "the version \"1..2\" has an empty part; parts are digits separated by one `.` or `_`"
        );
        assert_eq!(
            Version::parse_dotted("1.2a").unwrap_err().to_string(),
            "the version \"1.2a\" holds 'a'; a version is digits, parts separated by `.` or `_`"
        );
        assert!(matches!(
            Version::parse_whole("9223372036854775808"),
            Err(VersionError::TooLarge { .. })
        ));
    }

    #[test]
    fn json_reads_integers_and_strings_and_writes_strings() {
        let from_int: Version = serde_json::from_str("5").unwrap();
        let from_text: Version = serde_json::from_str("\"1.2.3\"").unwrap();
        assert_eq!(from_int, Version::whole(5).unwrap());
        assert_eq!(serde_json::to_string(&from_int).unwrap(), "\"5\"");
        assert_eq!(serde_json::to_string(&from_text).unwrap(), "\"1.2.3\"");
        assert!(serde_json::from_str::<Version>("-3").is_err());
        assert!(serde_json::from_str::<Version>("\"x\"").is_err());
    }
}
