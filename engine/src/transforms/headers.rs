//! Header transforms and predicates: InsertHeader, DropHeaders, HasHeaderKey.

use sluice_proto::Header;

use super::{Envelope, Predicate, Settings, Transform, TransformError};

/// `InsertHeader`: adds a header with a literal value.
#[derive(Debug)]
pub(super) struct InsertHeader {
    header: String,
    value: String,
}

impl InsertHeader {
    pub(super) fn new(s: &Settings<'_>) -> Result<Self, TransformError> {
        Ok(InsertHeader {
            header: s.required("header")?.to_owned(),
            value: s
                .get("value.literal")
                .ok_or_else(|| s.error("value.literal", "is required"))?
                .to_owned(),
        })
    }
}

impl Transform for InsertHeader {
    fn apply(&self, mut r: Envelope) -> Result<Option<Envelope>, TransformError> {
        r.headers
            .push(Header::text(self.header.clone(), self.value.clone()));
        Ok(Some(r))
    }
}

/// `DropHeaders`: removes every header with one of the given keys.
#[derive(Debug)]
pub(super) struct DropHeaders {
    headers: Vec<String>,
}

impl DropHeaders {
    pub(super) fn new(s: &Settings<'_>) -> Result<Self, TransformError> {
        let headers = s.list("headers");
        if headers.is_empty() {
            return Err(s.error("headers", "is required"));
        }
        Ok(DropHeaders { headers })
    }
}

impl Transform for DropHeaders {
    fn apply(&self, mut r: Envelope) -> Result<Option<Envelope>, TransformError> {
        r.headers.retain(|h| !self.headers.contains(&h.key));
        Ok(Some(r))
    }
}

/// `HasHeaderKey`: the record has at least one header with key `name`.
#[derive(Debug)]
pub(super) struct HasHeaderKey {
    name: String,
}

impl HasHeaderKey {
    pub(super) fn new(s: &Settings<'_>) -> Result<Self, TransformError> {
        Ok(HasHeaderKey {
            name: s.required("name")?.to_owned(),
        })
    }
}

impl Predicate for HasHeaderKey {
    fn test(&self, r: &Envelope) -> bool {
        r.headers.iter().any(|h| h.key == self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{config, record};
    use super::super::TransformChain;
    use sluice_proto::{Header, Value};

    #[test]
    fn headers_are_inserted_dropped_and_tested() {
        let chain = TransformChain::from_config(&config(&[
            ("transforms", "drop, mark"),
            (
                "transforms.drop.type",
                "org.apache.kafka.connect.transforms.DropHeaders",
            ),
            ("transforms.drop.headers", "secret, trace"),
            ("transforms.mark.type", "InsertHeader"),
            ("transforms.mark.header", "seen"),
            ("transforms.mark.value.literal", "1"),
            ("transforms.mark.predicate", "hasUser"),
            ("predicates", "hasUser"),
            ("predicates.hasUser.type", "HasHeaderKey"),
            ("predicates.hasUser.name", "user"),
        ]))
        .unwrap();
        let mut r = record(Value::Null);
        r.headers = vec![
            Header::text("secret", "x"),
            Header::text("user", "ann"),
            Header::text("trace", "t"),
        ];
        let out = chain.apply(r).unwrap().unwrap();
        assert_eq!(
            out.headers,
            vec![Header::text("user", "ann"), Header::text("seen", "1")]
        );
        let out = chain.apply(record(Value::Null)).unwrap().unwrap();
        assert!(out.headers.is_empty(), "no user header: not marked");
    }
}
