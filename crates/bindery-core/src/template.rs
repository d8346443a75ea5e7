//! Templates for producer `routing-key` and `partition-key`, such as
//! `hb.{header.region}` or `{payload.id}`.

use std::fmt;

use bytes::Bytes;

use crate::message::Message;

/// A parsed key template: literal text and placeholders.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyTemplate {
    source: String,
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Header(String),
    Payload(Vec<String>),
    Key,
    RoutingKey,
}

/// A template that cannot be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateSyntaxError(String);

/// A template that cannot be filled for one message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("key template `{template}`: {reason}")]
pub struct TemplateError {
    template: String,
    reason: String,
}

impl KeyTemplate {
    /// Parses `source`. Placeholders: `{header.NAME}`, `{payload.PATH}`
    /// (a dotted path into a JSON payload), `{payload}`, `{key}`,
    /// `{routing-key}`. `{{` and `}}` stand for literal braces.
    pub fn parse(source: &str) -> Result<Self, TemplateSyntaxError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = source.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => {
                                return Err(TemplateSyntaxError(format!(
                                    "unclosed `{{` in `{source}`"
                                )));
                            }
                        }
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(parse_placeholder(source, name.trim())?);
                }
                '}' => {
                    return Err(TemplateSyntaxError(format!(
                        "unmatched `}}` in `{source}` (write `}}}}` for a literal brace)"
                    )));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Self {
            source: source.to_owned(),
            parts,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the template has no placeholder.
    pub fn is_fixed(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    /// Fills the template from `message`.
    pub fn render(&self, message: &Message<Bytes>) -> Result<String, TemplateError> {
        let mut out = String::new();
        let mut payload: Option<serde_json::Value> = None;
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Header(name) => match message.headers().get(name) {
                    Some(value) => out.push_str(value),
                    None => return Err(self.error(format!("header `{name}` is missing"))),
                },
                Part::Key => match message.key() {
                    Some(key) => out.push_str(&String::from_utf8_lossy(key)),
                    None => return Err(self.error("the message has no key".into())),
                },
                Part::RoutingKey => match message.routing_key() {
                    Some(key) => out.push_str(key),
                    None => return Err(self.error("the message has no routing key".into())),
                },
                Part::Payload(path) => {
                    if payload.is_none() {
                        let parsed = serde_json::from_slice(message.payload())
                            .map_err(|e| self.error(format!("the payload is not JSON: {e}")))?;
                        payload = Some(parsed);
                    }
                    let mut value = payload.as_ref().expect("parsed above");
                    for field in path {
                        value = match value {
                            serde_json::Value::Array(items) => {
                                field.parse::<usize>().ok().and_then(|i| items.get(i))
                            }
                            other => other.get(field),
                        }
                        .ok_or_else(|| {
                            self.error(format!("the payload has no `{}`", path.join(".")))
                        })?;
                    }
                    match value {
                        serde_json::Value::String(text) => out.push_str(text),
                        other => out.push_str(&other.to_string()),
                    }
                }
            }
        }
        Ok(out)
    }

    fn error(&self, reason: String) -> TemplateError {
        TemplateError {
            template: self.source.clone(),
            reason,
        }
    }
}

fn parse_placeholder(source: &str, name: &str) -> Result<Part, TemplateSyntaxError> {
    let (head, rest) = match name.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (name, None),
    };
    match (head, rest) {
        ("header", Some(header)) if !header.is_empty() => Ok(Part::Header(header.to_owned())),
        ("payload", None) => Ok(Part::Payload(Vec::new())),
        ("payload", Some(path)) if !path.is_empty() => {
            Ok(Part::Payload(path.split('.').map(str::to_owned).collect()))
        }
        ("key", None) => Ok(Part::Key),
        ("routing-key", None) => Ok(Part::RoutingKey),
        _ => Err(TemplateSyntaxError(format!(
            "unknown placeholder `{{{name}}}` in `{source}`; use {{header.NAME}}, {{payload.PATH}}, {{payload}}, {{key}} or {{routing-key}}"
        ))),
    }
}

impl fmt::Debug for KeyTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyTemplate({:?})", self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Message<Bytes> {
        Message::new(Bytes::from_static(
            br#"{"id":42,"customer":{"name":"ann"}}"#,
        ))
        .with_header("region", "eu")
    }

    #[test]
    fn renders_headers_and_payload_paths() {
        let t =
            KeyTemplate::parse("hb.{header.region}.{payload.customer.name}-{payload.id}").unwrap();
        assert_eq!(t.render(&message()).unwrap(), "hb.eu.ann-42");
        assert!(KeyTemplate::parse("fixed").unwrap().is_fixed());
    }

    #[test]
    fn reports_missing_parts_and_bad_syntax() {
        let t = KeyTemplate::parse("{header.zone}").unwrap();
        assert!(
            t.render(&message())
                .unwrap_err()
                .to_string()
                .contains("zone")
        );
        assert!(KeyTemplate::parse("{nope}").is_err());
        assert!(KeyTemplate::parse("{header.x").is_err());
        assert_eq!(
            KeyTemplate::parse("{{x}}")
                .unwrap()
                .render(&message())
                .unwrap(),
            "{x}"
        );
    }
}
