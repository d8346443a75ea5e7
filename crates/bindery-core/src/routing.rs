//! AMQP topic matching of routing keys, shared by every binder that has to
//! match in the client (memory, Kafka) so all agree with RabbitMQ.
//!
//! Keys and patterns are words separated by `.`; in a pattern `*` matches
//! exactly one word and `#` matches zero or more words.

use std::fmt;

/// A compiled binding pattern such as `item.*` or `audit.#`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RoutingPattern {
    source: String,
    words: Vec<PatternWord>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum PatternWord {
    Literal(String),
    One,
    Many,
}

impl RoutingPattern {
    /// Compiles `pattern`. Every string is a valid pattern.
    pub fn new(pattern: &str) -> Self {
        let words = pattern
            .split('.')
            .map(|word| match word {
                "*" => PatternWord::One,
                "#" => PatternWord::Many,
                literal => PatternWord::Literal(literal.to_owned()),
            })
            .collect();
        Self {
            source: pattern.to_owned(),
            words,
        }
    }

    /// The pattern that matches every key.
    pub fn any() -> Self {
        Self::new("#")
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern is `#`, which matches every key.
    pub fn is_catch_all(&self) -> bool {
        matches!(self.words.as_slice(), [PatternWord::Many])
    }

    /// Whether `routing_key` matches (a missing key is the empty key).
    pub fn matches(&self, routing_key: &str) -> bool {
        if self.is_catch_all() {
            return true;
        }
        let key: Vec<&str> = if routing_key.is_empty() {
            Vec::new()
        } else {
            routing_key.split('.').collect()
        };
        match_words(&self.words, &key)
    }
}

impl fmt::Debug for RoutingPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RoutingPattern({:?})", self.source)
    }
}

impl fmt::Display for RoutingPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn match_words(pattern: &[PatternWord], key: &[&str]) -> bool {
    match pattern.split_first() {
        None => key.is_empty(),
        Some((PatternWord::Many, rest)) => {
            (0..=key.len()).any(|skip| match_words(rest, &key[skip..]))
        }
        Some((PatternWord::One, rest)) => !key.is_empty() && match_words(rest, &key[1..]),
        Some((PatternWord::Literal(word), rest)) => {
            key.first() == Some(&word.as_str()) && match_words(rest, &key[1..])
        }
    }
}

/// Whether `routing_key` matches any of `patterns`.
pub fn matches_any(patterns: &[RoutingPattern], routing_key: &str) -> bool {
    patterns.iter().any(|p| p.matches(routing_key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amqp_topic_semantics() {
        let cases = [
            ("item.*", "item.insert", true),
            ("item.*", "item", false),
            ("item.*", "item.a.b", false),
            ("item.#", "item", true),
            ("item.#", "item.a.b", true),
            ("#", "", true),
            ("#", "a.b", true),
            ("*", "", false),
            ("*.update", "item.update", true),
            ("#.delete", "a.b.delete", true),
            ("a.#.z", "a.z", true),
            ("a.#.z", "a.b.c.z", true),
            ("a.#.z", "a.b.c", false),
            ("item.update", "item.update", true),
            ("item.update", "item.delete", false),
        ];
        for (pattern, key, expected) in cases {
            assert_eq!(
                RoutingPattern::new(pattern).matches(key),
                expected,
                "{pattern} ~ {key}"
            );
        }
    }
}
