//! Config definitions: what keys a worker, connector or task accepts, with type, default,
//! importance, documentation and validator. The engine validates a config against its
//! definition before anything starts, and the REST validate endpoint reports per-key errors
//! from the same definition, so the two can never disagree.

use std::collections::BTreeMap;
use std::fmt;

/// Shown instead of a password value in every REST response and log line.
pub const HIDDEN: &str = "[hidden]";

/// The type of a config value, with Kafka Connect's names and parsing rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    /// `true` or `false`, any case.
    Boolean,
    /// Any string.
    String,
    /// A 32-bit signed integer.
    Int,
    /// A 16-bit signed integer.
    Short,
    /// A 64-bit signed integer.
    Long,
    /// A 64-bit float.
    Double,
    /// Comma-separated strings, each trimmed; the empty string is the empty list.
    List,
    /// A class name (a connector, converter or transform), non-empty.
    Class,
    /// A secret: never shown, never logged.
    Password,
}

impl ConfigType {
    /// The upper-case name Kafka Connect's REST API uses (`"STRING"`, `"INT"`, ...).
    pub fn rest_name(self) -> &'static str {
        match self {
            ConfigType::Boolean => "BOOLEAN",
            ConfigType::String => "STRING",
            ConfigType::Int => "INT",
            ConfigType::Short => "SHORT",
            ConfigType::Long => "LONG",
            ConfigType::Double => "DOUBLE",
            ConfigType::List => "LIST",
            ConfigType::Class => "CLASS",
            ConfigType::Password => "PASSWORD",
        }
    }
}

/// How much a user needs to know about a key, as in Kafka Connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Importance {
    /// Must be understood to run the connector at all.
    High,
    /// Worth reading.
    Medium,
    /// Tuning.
    Low,
}

impl Importance {
    /// The upper-case name Kafka Connect's REST API uses.
    pub fn rest_name(self) -> &'static str {
        match self {
            Importance::High => "HIGH",
            Importance::Medium => "MEDIUM",
            Importance::Low => "LOW",
        }
    }
}

/// A secret value. Its `Debug` and `Display` print [`HIDDEN`]; only [`Password::expose`]
/// gives the text, so a password cannot leak through a careless `{:?}`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Password(secret.into())
    }

    /// The secret itself, for handing to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(HIDDEN)
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(HIDDEN)
    }
}

/// A parsed, typed config value.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigValue {
    /// [`ConfigType::Boolean`]
    Boolean(bool),
    /// [`ConfigType::String`]
    String(String),
    /// [`ConfigType::Int`]
    Int(i32),
    /// [`ConfigType::Short`]
    Short(i16),
    /// [`ConfigType::Long`]
    Long(i64),
    /// [`ConfigType::Double`]
    Double(f64),
    /// [`ConfigType::List`]
    List(Vec<String>),
    /// [`ConfigType::Class`]
    Class(String),
    /// [`ConfigType::Password`]
    Password(Password),
}

impl ConfigValue {
    /// Parses `raw` as `ty`; the error says what was expected.
    pub fn parse(ty: ConfigType, raw: &str) -> Result<ConfigValue, String> {
        let trimmed = raw.trim();
        match ty {
            ConfigType::Boolean => match trimmed.to_ascii_lowercase().as_str() {
                "true" => Ok(ConfigValue::Boolean(true)),
                "false" => Ok(ConfigValue::Boolean(false)),
                _ => Err(format!("expected true or false, got {raw:?}")),
            },
            ConfigType::String => Ok(ConfigValue::String(trimmed.to_owned())),
            ConfigType::Int => trimmed
                .parse()
                .map(ConfigValue::Int)
                .map_err(|_| format!("expected a 32-bit integer, got {raw:?}")),
            ConfigType::Short => trimmed
                .parse()
                .map(ConfigValue::Short)
                .map_err(|_| format!("expected a 16-bit integer, got {raw:?}")),
            ConfigType::Long => trimmed
                .parse()
                .map(ConfigValue::Long)
                .map_err(|_| format!("expected a 64-bit integer, got {raw:?}")),
            ConfigType::Double => trimmed
                .parse::<f64>()
                .ok()
                .filter(|d| d.is_finite())
                .map(ConfigValue::Double)
                .ok_or_else(|| format!("expected a number, got {raw:?}")),
            ConfigType::List => Ok(ConfigValue::List(
                trimmed
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            )),
            ConfigType::Class => {
                if trimmed.is_empty() {
                    Err("expected a class name, got an empty string".to_owned())
                } else {
                    Ok(ConfigValue::Class(trimmed.to_owned()))
                }
            }
            // Secrets are taken as given: surrounding blanks may be part of them.
            ConfigType::Password => Ok(ConfigValue::Password(Password::new(raw))),
        }
    }

    fn as_number(&self) -> Option<f64> {
        match self {
            ConfigValue::Int(v) => Some(f64::from(*v)),
            ConfigValue::Short(v) => Some(f64::from(*v)),
            // Precision loss past 2^53 is irrelevant for range checks of config values.
            #[allow(clippy::cast_precision_loss)]
            ConfigValue::Long(v) => Some(*v as f64),
            ConfigValue::Double(v) => Some(*v),
            _ => None,
        }
    }

    fn as_text(&self) -> Option<&str> {
        match self {
            ConfigValue::String(s) | ConfigValue::Class(s) => Some(s),
            _ => None,
        }
    }
}

/// A check a value must pass beyond its type.
#[derive(Debug, Clone)]
pub enum Validator {
    /// A number within bounds (inclusive).
    Range {
        /// Lower bound, if any.
        min: Option<f64>,
        /// Upper bound, if any.
        max: Option<f64>,
    },
    /// One of the given strings, compared case-insensitively (Kafka Connect's
    /// `CaseInsensitiveValidString`; its enum-like keys accept any case).
    OneOf(&'static [&'static str]),
    /// A string that is not empty.
    NonEmptyString,
    /// Any other rule; the error names what is wrong with the value.
    Custom(fn(&ConfigValue) -> Result<(), String>),
}

impl Validator {
    /// At least `min`.
    pub fn at_least(min: f64) -> Self {
        Validator::Range {
            min: Some(min),
            max: None,
        }
    }

    /// Between `min` and `max`, inclusive.
    pub fn between(min: f64, max: f64) -> Self {
        Validator::Range {
            min: Some(min),
            max: Some(max),
        }
    }

    fn check(&self, value: &ConfigValue) -> Result<(), String> {
        match self {
            Validator::Range { min, max } => {
                let Some(n) = value.as_number() else {
                    return Err("a range applies to numbers only".to_owned());
                };
                if let Some(min) = min {
                    if n < *min {
                        return Err(format!("must be at least {min}"));
                    }
                }
                if let Some(max) = max {
                    if n > *max {
                        return Err(format!("must be no more than {max}"));
                    }
                }
                Ok(())
            }
            Validator::OneOf(allowed) => {
                let text = value.as_text().unwrap_or_default();
                if allowed.iter().any(|a| a.eq_ignore_ascii_case(text)) {
                    Ok(())
                } else {
                    Err(format!("must be one of {}", allowed.join(", ")))
                }
            }
            Validator::NonEmptyString => match value.as_text() {
                Some(s) if !s.is_empty() => Ok(()),
                _ => Err("must not be empty".to_owned()),
            },
            Validator::Custom(f) => f(value),
        }
    }

    /// The values a user may pick from, for the REST validate endpoint.
    pub fn recommended(&self) -> Vec<String> {
        match self {
            Validator::OneOf(allowed) => allowed.iter().map(|s| (*s).to_owned()).collect(),
            _ => Vec::new(),
        }
    }
}

/// What a key is when the user does not set it.
#[derive(Debug, Clone, PartialEq)]
pub enum DefaultValue {
    /// The user must set it.
    Required,
    /// Absent means "not set" (`null` in Kafka Connect).
    Null,
    /// This text, parsed with the key's type.
    Value(&'static str),
}

/// One key of a [`ConfigDef`].
#[derive(Debug, Clone)]
pub struct ConfigKey {
    /// The key, e.g. `bootstrap.servers`.
    pub name: &'static str,
    /// Its type.
    pub ty: ConfigType,
    /// Its default.
    pub default: DefaultValue,
    /// Its importance.
    pub importance: Importance,
    /// What it does, for users.
    pub documentation: &'static str,
    /// A group for display, e.g. `Common`, `Transforms`.
    pub group: Option<&'static str>,
    /// A further check.
    pub validator: Option<Validator>,
}

impl ConfigKey {
    /// A required key of `ty` with medium importance and no documentation yet.
    pub fn new(name: &'static str, ty: ConfigType) -> Self {
        ConfigKey {
            name,
            ty,
            default: DefaultValue::Required,
            importance: Importance::Medium,
            documentation: "",
            group: None,
            validator: None,
        }
    }

    /// Sets the default (text parsed with the key's type).
    #[must_use]
    pub fn default_value(mut self, text: &'static str) -> Self {
        self.default = DefaultValue::Value(text);
        self
    }

    /// Makes the key optional with no value.
    #[must_use]
    pub fn optional(mut self) -> Self {
        self.default = DefaultValue::Null;
        self
    }

    /// Sets the importance.
    #[must_use]
    pub fn importance(mut self, importance: Importance) -> Self {
        self.importance = importance;
        self
    }

    /// Sets the documentation.
    #[must_use]
    pub fn doc(mut self, documentation: &'static str) -> Self {
        self.documentation = documentation;
        self
    }

    /// Sets the display group.
    #[must_use]
    pub fn group(mut self, group: &'static str) -> Self {
        self.group = Some(group);
        self
    }

    /// Sets the validator.
    #[must_use]
    pub fn validator(mut self, validator: Validator) -> Self {
        self.validator = Some(validator);
        self
    }

    fn parse(&self, raw: Option<&str>) -> Result<Option<ConfigValue>, String> {
        let value = match (raw, &self.default) {
            (Some(raw), _) => ConfigValue::parse(self.ty, raw)?,
            (None, DefaultValue::Required) => {
                return Err("is required and has no default".to_owned())
            }
            (None, DefaultValue::Null) => return Ok(None),
            (None, DefaultValue::Value(text)) => ConfigValue::parse(self.ty, text)
                .map_err(|e| format!("has an invalid default ({e})"))?,
        };
        if let Some(validator) = &self.validator {
            validator.check(&value)?;
        }
        Ok(Some(value))
    }
}

/// A config error that names the key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// The key at fault.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

/// All errors of one config, so a user fixes them in one round.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct ConfigErrors(pub Vec<ConfigError>);

/// The per-key outcome of [`ConfigDef::validate`], in the shape of Kafka Connect's
/// `ConfigValueInfo`: the value (masked when a password), recommendations and errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyReport {
    /// The key.
    pub name: String,
    /// The value as given or defaulted, [`HIDDEN`] for passwords.
    pub value: Option<String>,
    /// Values a user may pick from.
    pub recommended_values: Vec<String>,
    /// What is wrong, empty when valid.
    pub errors: Vec<String>,
}

/// The keys a worker, connector or task accepts.
#[derive(Debug, Clone, Default)]
pub struct ConfigDef {
    keys: Vec<ConfigKey>,
    prefixes: Vec<&'static str>,
}

impl ConfigDef {
    /// An empty definition.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key; a later key of the same name replaces the earlier one.
    #[must_use]
    pub fn define(mut self, key: ConfigKey) -> Self {
        self.keys.retain(|k| k.name != key.name);
        self.keys.push(key);
        self
    }

    /// Accepts any key starting with `prefix` without checking it (pass-through keys such
    /// as `producer.` or `value.converter.`).
    #[must_use]
    pub fn pass_through(mut self, prefix: &'static str) -> Self {
        self.prefixes.push(prefix);
        self
    }

    /// Adds every key and prefix of `other`.
    #[must_use]
    pub fn merge(mut self, other: &ConfigDef) -> Self {
        for key in &other.keys {
            self = self.define(key.clone());
        }
        self.prefixes.extend(other.prefixes.iter().copied());
        self
    }

    /// The keys, in definition order.
    pub fn keys(&self) -> &[ConfigKey] {
        &self.keys
    }

    /// The key named `name`.
    pub fn key(&self, name: &str) -> Option<&ConfigKey> {
        self.keys.iter().find(|k| k.name == name)
    }

    /// Whether `name` is defined or passes through a prefix.
    pub fn knows(&self, name: &str) -> bool {
        self.key(name).is_some() || self.prefixes.iter().any(|p| name.starts_with(p))
    }

    /// Parses `props` into typed values, or returns every error at once.
    pub fn parse(&self, props: &BTreeMap<String, String>) -> Result<ParsedConfig, ConfigErrors> {
        let mut values = BTreeMap::new();
        let mut errors = Vec::new();
        for key in &self.keys {
            match key.parse(props.get(key.name).map(String::as_str)) {
                Ok(Some(value)) => {
                    values.insert(key.name.to_owned(), value);
                }
                Ok(None) => {}
                Err(message) => errors.push(ConfigError {
                    key: key.name.to_owned(),
                    message,
                }),
            }
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let unknown = props.keys().filter(|k| !self.knows(k)).cloned().collect();
        Ok(ParsedConfig {
            values,
            unknown,
            originals: props.clone(),
            masked: self.mask(props),
        })
    }

    /// Checks `props` key by key, for the REST validate endpoint.
    pub fn validate(&self, props: &BTreeMap<String, String>) -> Vec<KeyReport> {
        self.keys
            .iter()
            .map(|key| {
                let raw = props.get(key.name).map(String::as_str);
                let shown = |text: &str| {
                    if key.ty == ConfigType::Password {
                        HIDDEN.to_owned()
                    } else {
                        text.to_owned()
                    }
                };
                let value = match (raw, &key.default) {
                    (Some(raw), _) => Some(shown(raw)),
                    (None, DefaultValue::Value(text)) => Some(shown(text)),
                    (None, _) => None,
                };
                let errors = match key.parse(raw) {
                    Ok(_) => Vec::new(),
                    Err(e) => vec![format!("{}: {e}", key.name)],
                };
                KeyReport {
                    name: key.name.to_owned(),
                    value,
                    recommended_values: key
                        .validator
                        .as_ref()
                        .map(Validator::recommended)
                        .unwrap_or_default(),
                    errors,
                }
            })
            .collect()
    }

    /// `props` with every password-typed value replaced by [`HIDDEN`], for REST responses
    /// and logs. Unknown keys whose name says they hold a secret are masked too.
    pub fn mask(&self, props: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        props
            .iter()
            .map(|(k, v)| {
                let secret = match self.key(k) {
                    Some(key) => key.ty == ConfigType::Password,
                    None => looks_secret(k),
                };
                let v = if secret { HIDDEN.to_owned() } else { v.clone() };
                (k.clone(), v)
            })
            .collect()
    }
}

/// Pass-through keys (`producer.sasl.jaas.config`, `connection.password`) are not typed by
/// any definition; their names are the only hint that they are secret.
pub fn looks_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "jaas.config", "token", "credentials"]
        .iter()
        .any(|s| key.contains(s))
}

/// `message` with every secret value of `props` (by [`looks_secret`] key names) replaced by
/// [`HIDDEN`]: client libraries quote offending values in their errors.
pub fn redact(message: &str, props: &BTreeMap<String, String>) -> String {
    let mut out = message.to_owned();
    for (k, v) in props {
        if looks_secret(k) && !v.is_empty() {
            out = out.replace(v.as_str(), HIDDEN);
        }
    }
    out
}

/// A config parsed against its [`ConfigDef`].
#[derive(Clone)]
pub struct ParsedConfig {
    values: BTreeMap<String, ConfigValue>,
    unknown: Vec<String>,
    originals: BTreeMap<String, String>,
    /// `originals` with secrets masked, for `Debug` and logs.
    masked: BTreeMap<String, String>,
}

impl fmt::Debug for ParsedConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedConfig")
            .field("values", &self.values)
            .field("unknown", &self.unknown)
            .field("originals", &self.masked)
            .finish()
    }
}

impl ParsedConfig {
    /// The typed value of `key`, if set or defaulted.
    pub fn get(&self, key: &str) -> Option<&ConfigValue> {
        self.values.get(key)
    }

    /// A string (or class) value.
    pub fn string(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(ConfigValue::as_text)
    }

    /// A boolean value.
    pub fn boolean(&self, key: &str) -> Option<bool> {
        match self.get(key) {
            Some(ConfigValue::Boolean(b)) => Some(*b),
            _ => None,
        }
    }

    /// An integer value of any width.
    pub fn long(&self, key: &str) -> Option<i64> {
        match self.get(key) {
            Some(ConfigValue::Int(v)) => Some(i64::from(*v)),
            Some(ConfigValue::Short(v)) => Some(i64::from(*v)),
            Some(ConfigValue::Long(v)) => Some(*v),
            _ => None,
        }
    }

    /// A list value.
    pub fn list(&self, key: &str) -> Option<&[String]> {
        match self.get(key) {
            Some(ConfigValue::List(v)) => Some(v),
            _ => None,
        }
    }

    /// A password value.
    pub fn password(&self, key: &str) -> Option<&Password> {
        match self.get(key) {
            Some(ConfigValue::Password(p)) => Some(p),
            _ => None,
        }
    }

    /// Keys that are neither defined nor pass through a prefix: callers warn about them.
    pub fn unknown_keys(&self) -> &[String] {
        &self.unknown
    }

    /// Every original key starting with `prefix`, with the prefix removed
    /// (`producer.linger.ms` -> `linger.ms`).
    pub fn with_prefix(&self, prefix: &str) -> BTreeMap<String, String> {
        self.originals
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_owned(), v.clone())))
            .filter(|(k, _)| !k.is_empty())
            .collect()
    }

    /// The properties as given, secrets included: hand them to clients, never to logs.
    pub fn originals(&self) -> &BTreeMap<String, String> {
        &self.originals
    }

    /// The properties with every secret replaced by [`HIDDEN`], for logs and REST.
    pub fn masked(&self) -> &BTreeMap<String, String> {
        &self.masked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn def() -> ConfigDef {
        ConfigDef::new()
            .define(ConfigKey::new("name", ConfigType::String).validator(Validator::NonEmptyString))
            .define(
                ConfigKey::new("tasks.max", ConfigType::Int)
                    .default_value("1")
                    .validator(Validator::at_least(1.0)),
            )
            .define(ConfigKey::new("topics", ConfigType::List).optional())
            .define(
                ConfigKey::new("errors.tolerance", ConfigType::String)
                    .default_value("none")
                    .validator(Validator::OneOf(&["none", "all"])),
            )
            .define(ConfigKey::new("connection.password", ConfigType::Password).optional())
            .define(ConfigKey::new("enabled", ConfigType::Boolean).default_value("true"))
            .pass_through("producer.override.")
    }

    #[test]
    fn parses_types_and_defaults() {
        let parsed = def()
            .parse(&props(&[
                ("name", "n"),
                ("topics", " a, b ,,c "),
                ("errors.tolerance", "ALL"),
                ("enabled", "False"),
                ("producer.override.linger.ms", "5"),
            ]))
            .unwrap();
        assert_eq!(parsed.string("name"), Some("n"));
        assert_eq!(parsed.long("tasks.max"), Some(1));
        assert_eq!(
            parsed.list("topics"),
            Some(&["a".to_owned(), "b".to_owned(), "c".to_owned()][..])
        );
        assert_eq!(parsed.boolean("enabled"), Some(false));
        assert!(parsed.password("connection.password").is_none());
        assert!(parsed.unknown_keys().is_empty());
        assert_eq!(
            parsed.with_prefix("producer.override."),
            props(&[("linger.ms", "5")])
        );
    }

    #[test]
    fn every_error_names_its_key() {
        let err = def()
            .parse(&props(&[("tasks.max", "0"), ("enabled", "yes")]))
            .unwrap_err();
        let keys: Vec<&str> = err.0.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["name", "tasks.max", "enabled"]);
        let text = err.to_string();
        assert!(text.contains("name: is required"), "{text}");
        assert!(text.contains("tasks.max: must be at least 1"), "{text}");
        assert!(
            text.contains("enabled: expected true or false, got \"yes\""),
            "{text}"
        );
    }

    #[test]
    fn integers_out_of_range_are_rejected() {
        let err = def()
            .parse(&props(&[("name", "n"), ("tasks.max", "3000000000")]))
            .unwrap_err();
        assert_eq!(err.0[0].key, "tasks.max");
        assert!(err.0[0].message.contains("32-bit"));
    }

    #[test]
    fn unknown_keys_are_reported_not_dropped() {
        let parsed = def()
            .parse(&props(&[("name", "n"), ("tasks.mx", "2")]))
            .unwrap();
        assert_eq!(parsed.unknown_keys(), ["tasks.mx"]);
    }

    #[test]
    fn passwords_never_print() {
        let parsed = def()
            .parse(&props(&[("name", "n"), ("connection.password", "s3cret")]))
            .unwrap();
        let password = parsed.password("connection.password").unwrap();
        assert_eq!(password.expose(), "s3cret");
        assert!(!format!("{parsed:?}").contains("s3cret"));
        assert_eq!(password.to_string(), HIDDEN);

        let masked = def().mask(&props(&[
            ("connection.password", "s3cret"),
            (
                "producer.override.sasl.jaas.config",
                "x required password=p;",
            ),
            ("name", "n"),
        ]));
        assert_eq!(masked["connection.password"], HIDDEN);
        assert_eq!(masked["producer.override.sasl.jaas.config"], HIDDEN);
        assert_eq!(masked["name"], "n");

        let report = def().validate(&props(&[("connection.password", "s3cret")]));
        let pw = report
            .iter()
            .find(|r| r.name == "connection.password")
            .unwrap();
        assert_eq!(pw.value.as_deref(), Some(HIDDEN));
    }

    #[test]
    fn redact_hides_secret_values_quoted_in_errors() {
        let p = props(&[("sasl.jaas.config", "x password=\"s3\";"), ("topic", "t")]);
        assert_eq!(
            redact("bad sasl.jaas.config x password=\"s3\"; for topic t", &p),
            "bad sasl.jaas.config [hidden] for topic t"
        );
    }

    #[test]
    fn validate_reports_per_key() {
        let report = def().validate(&props(&[("errors.tolerance", "some")]));
        let by_name: BTreeMap<&str, &KeyReport> =
            report.iter().map(|r| (r.name.as_str(), r)).collect();
        assert_eq!(by_name["name"].errors.len(), 1);
        assert!(by_name["tasks.max"].errors.is_empty());
        assert_eq!(by_name["tasks.max"].value.as_deref(), Some("1"));
        assert_eq!(
            by_name["errors.tolerance"].errors,
            ["errors.tolerance: must be one of none, all"]
        );
        assert_eq!(
            by_name["errors.tolerance"].recommended_values,
            ["none", "all"]
        );
    }
}
