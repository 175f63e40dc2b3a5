//! Transforms and predicates about where a record goes: RegexRouter, Filter,
//! TopicNameMatches, RecordIsTombstone.

use regex::Regex;
use sluice_proto::Value;

use super::{Envelope, Predicate, Settings, Transform, TransformError};

/// Java's `String.replaceFirst`-style replacement (`$1`) turned into the regex crate's (`${1}`).
fn java_replacement(java: &str) -> String {
    let mut out = String::with_capacity(java.len());
    let mut chars = java.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    if next == '$' {
                        out.push_str("$$");
                    } else {
                        out.push(next);
                    }
                }
            }
            '$' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                out.push_str(&format!("${{{digits}}}"));
            }
            c => out.push(c),
        }
    }
    out
}

/// `RegexRouter`: renames the topic when the whole name matches `regex`.
#[derive(Debug)]
pub(super) struct RegexRouter {
    regex: Regex,
    replacement: String,
}

impl RegexRouter {
    pub(super) fn new(s: &Settings<'_>) -> Result<Self, TransformError> {
        let pattern = s.required("regex")?;
        // Java's Matcher.matches() anchors at both ends.
        let regex =
            Regex::new(&format!("^(?:{pattern})$")).map_err(|e| s.error("regex", e.to_string()))?;
        let replacement = s
            .get("replacement")
            .ok_or_else(|| s.error("replacement", "is required"))?;
        Ok(RegexRouter {
            regex,
            replacement: java_replacement(replacement),
        })
    }
}

impl Transform for RegexRouter {
    fn apply(&self, mut r: Envelope) -> Result<Option<Envelope>, TransformError> {
        if self.regex.is_match(&r.topic) {
            r.topic = self
                .regex
                .replace(&r.topic, self.replacement.as_str())
                .into_owned();
        }
        Ok(Some(r))
    }
}

/// `Filter`: drops every record it is applied to (gate it with a predicate).
#[derive(Debug)]
pub(super) struct Filter;

impl Transform for Filter {
    fn apply(&self, _r: Envelope) -> Result<Option<Envelope>, TransformError> {
        Ok(None)
    }
}

/// `TopicNameMatches`: the whole topic name matches `pattern`.
#[derive(Debug)]
pub(super) struct TopicNameMatches {
    regex: Regex,
}

impl TopicNameMatches {
    pub(super) fn new(s: &Settings<'_>) -> Result<Self, TransformError> {
        let pattern = s.required("pattern")?;
        let regex = Regex::new(&format!("^(?:{pattern})$"))
            .map_err(|e| s.error("pattern", e.to_string()))?;
        Ok(TopicNameMatches { regex })
    }
}

impl Predicate for TopicNameMatches {
    fn test(&self, r: &Envelope) -> bool {
        self.regex.is_match(&r.topic)
    }
}

/// `RecordIsTombstone`: the value is null.
#[derive(Debug)]
pub(super) struct RecordIsTombstone;

impl Predicate for RecordIsTombstone {
    fn test(&self, r: &Envelope) -> bool {
        matches!(r.value, Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{config, record};
    use super::super::TransformChain;
    use super::*;

    #[test]
    fn regex_router_uses_java_group_references_and_whole_name_matches() {
        let chain = TransformChain::from_config(&config(&[
            ("transforms", "r"),
            (
                "transforms.r.type",
                "org.apache.kafka.connect.transforms.RegexRouter",
            ),
            ("transforms.r.regex", "(.*)rders"),
            ("transforms.r.replacement", "$1rders-\\$archive"),
        ]))
        .unwrap();
        let out = chain.apply(record(Value::Null)).unwrap().unwrap();
        assert_eq!(out.topic, "orders-$archive");
        let mut other = record(Value::Null);
        other.topic = "orders-eu".into();
        assert_eq!(
            chain.apply(other).unwrap().unwrap().topic,
            "orders-eu",
            "partial matches do not route"
        );
        let e = TransformChain::from_config(&config(&[
            ("transforms", "r"),
            ("transforms.r.type", "RegexRouter"),
            ("transforms.r.regex", "("),
            ("transforms.r.replacement", "x"),
        ]))
        .unwrap_err();
        assert!(e.to_string().starts_with("transforms.r.regex:"), "{e}");
    }

    #[test]
    fn filter_with_topic_predicate_and_negation() {
        let chain = TransformChain::from_config(&config(&[
            ("transforms", "keepOrders"),
            ("transforms.keepOrders.type", "Filter"),
            ("transforms.keepOrders.predicate", "isOrders"),
            ("transforms.keepOrders.negate", "true"),
            ("predicates", "isOrders"),
            (
                "predicates.isOrders.type",
                "org.apache.kafka.connect.transforms.predicates.TopicNameMatches",
            ),
            ("predicates.isOrders.pattern", "ord.*"),
        ]))
        .unwrap();
        assert!(chain.apply(record(Value::Int64(1))).unwrap().is_some());
        let mut other = record(Value::Int64(1));
        other.topic = "payments".into();
        assert!(chain.apply(other).unwrap().is_none());
    }
}
