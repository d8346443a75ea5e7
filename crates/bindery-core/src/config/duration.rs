//! Durations in configuration: `"1s"`, `"250ms"`, `"1m 30s"`, or a number
//! of milliseconds as Spring writes them (`1000`).

use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::ser::Serializer;

/// Reads a duration from humantime text or integer milliseconds.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a duration such as \"1s\" or \"250ms\", or milliseconds as a number")
        }

        fn visit_u64<E: de::Error>(self, ms: u64) -> Result<Duration, E> {
            Ok(Duration::from_millis(ms))
        }

        fn visit_i64<E: de::Error>(self, ms: i64) -> Result<Duration, E> {
            u64::try_from(ms)
                .map(Duration::from_millis)
                .map_err(|_| E::custom("a duration cannot be negative"))
        }

        fn visit_f64<E: de::Error>(self, ms: f64) -> Result<Duration, E> {
            if ms.is_finite() && ms >= 0.0 {
                Ok(Duration::from_secs_f64(ms / 1000.0))
            } else {
                Err(E::custom(
                    "a duration must be a finite, non-negative number",
                ))
            }
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            let text = text.trim();
            if let Ok(ms) = text.parse::<u64>() {
                return Ok(Duration::from_millis(ms));
            }
            humantime::parse_duration(text).map_err(|e| {
                E::custom(format!(
                    "`{text}` is not a duration ({e}); write e.g. \"1s\" or \"250ms\""
                ))
            })
        }
    }

    deserializer.deserialize_any(DurationVisitor)
}

/// Writes a duration as humantime text.
pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&humantime::format_duration(*duration).to_string())
}

/// The same, for an optional duration (absent = `None`).
pub mod option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Reads an optional duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(deserialize_with = "super::deserialize")] Duration);
        Option::<Wrapped>::deserialize(deserializer).map(|w| w.map(|Wrapped(d)| d))
    }

    /// Writes an optional duration.
    pub fn serialize<S: Serializer>(
        duration: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match duration {
            Some(duration) => super::serialize(duration, serializer),
            None => serializer.serialize_none(),
        }
    }
}
