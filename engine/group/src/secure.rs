//! The member's connection security: TLS (on OpenSSL, as librdkafka's) and SASL PLAIN and
//! SCRAM-SHA-256/512 (RFC 5802) over Kafka's SaslHandshake and SaslAuthenticate.
//!
//! The settings are read from the same librdkafka-style keys the worker's other Kafka
//! clients take (`security.protocol`, `ssl.ca.location`, `sasl.mechanism`, ...), so one
//! worker config secures every connection it makes; a setting the member cannot honour
//! is refused by name rather than dropped.

use std::collections::BTreeMap;
use std::path::PathBuf;

use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use openssl::x509::X509;

use crate::GroupError;

/// How the member's connections are secured; the default is plain TCP, no authentication.
#[derive(Debug, Clone, Default)]
pub struct Security {
    pub tls: Option<Tls>,
    pub sasl: Option<Sasl>,
}

/// TLS settings, by their librdkafka names.
#[derive(Debug, Clone)]
pub struct Tls {
    /// `ssl.ca.location`: a PEM file of trusted CAs; the system's store when absent.
    pub ca_location: Option<PathBuf>,
    /// `ssl.ca.pem`: trusted CAs inline.
    pub ca_pem: Option<String>,
    /// `ssl.certificate.location` and `ssl.key.location`: this client's own identity (mTLS).
    pub certificate_location: Option<PathBuf>,
    pub key_location: Option<PathBuf>,
    /// `ssl.key.password`: the passphrase of an encrypted key.
    pub key_password: Option<String>,
    /// `ssl.endpoint.identification.algorithm`: `https` (the default) checks the broker's
    /// name against its certificate, `none` does not.
    pub verify_hostname: bool,
    /// `enable.ssl.certificate.verification`: false accepts any certificate (tests only).
    pub verify_certificate: bool,
}

/// A SASL mechanism the member speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl Mechanism {
    /// The name Kafka knows it by.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// SASL settings: `sasl.mechanism` (or librdkafka's `sasl.mechanisms`), `sasl.username`,
/// `sasl.password`.
#[derive(Clone)]
pub struct Sasl {
    pub mechanism: Mechanism,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Sasl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sasl")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"[hidden]")
            .finish()
    }
}

/// Keys that would change who the client is or whom it trusts, in ways the member does
/// not implement: refused, so the member never connects less securely than asked.
const REFUSED: &[&str] = &[
    "ssl.keystore.location",
    "ssl.certificate.pem",
    "ssl.key.pem",
    "ssl.engine.location",
    "ssl.providers",
    "ssl.crl.location",
    "sasl.oauthbearer.",
    "sasl.kerberos.",
];

impl Security {
    /// Reads the settings from librdkafka-style client properties (the worker's
    /// `kafka_client_props`). Errors name the key at fault.
    pub fn from_client_props(props: &BTreeMap<String, String>) -> Result<Self, GroupError> {
        let get = |k: &str| props.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let protocol = get("security.protocol")
            .unwrap_or("plaintext")
            .to_ascii_lowercase();
        let (tls, sasl) = match protocol.as_str() {
            "plaintext" => (false, false),
            "ssl" => (true, false),
            "sasl_plaintext" => (false, true),
            "sasl_ssl" => (true, true),
            other => {
                return Err(GroupError::Config(format!(
                    "security.protocol: {other:?} is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"
                )))
            }
        };
        let refuse = |family: &str, why: &str| -> Result<(), GroupError> {
            let found = props.keys().find(|k| {
                REFUSED
                    .iter()
                    .any(|r| k.starts_with(r) && r.starts_with(family))
            });
            match found {
                Some(key) => Err(GroupError::Config(format!(
                    "{key}: not supported by the cluster's group member; {why}"
                ))),
                None => Ok(()),
            }
        };
        if tls {
            refuse(
                "ssl.",
                "give the certificate and key as PEM files (ssl.certificate.location, ssl.key.location)",
            )?;
        }
        if sasl {
            refuse(
                "sasl.",
                "it speaks SASL PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512",
            )?;
        }
        let flag = |k: &str, default: bool| -> Result<bool, GroupError> {
            match get(k).map(str::to_ascii_lowercase).as_deref() {
                None => Ok(default),
                Some("true") => Ok(true),
                Some("false") => Ok(false),
                Some(v) => Err(GroupError::Config(format!(
                    "{k}: {v:?} is not true or false"
                ))),
            }
        };
        let tls = if tls {
            let verify_hostname = match get("ssl.endpoint.identification.algorithm")
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                None | Some("https") => true,
                Some("none") => false,
                Some(v) => {
                    return Err(GroupError::Config(format!(
                        "ssl.endpoint.identification.algorithm: {v:?} is not https or none"
                    )))
                }
            };
            let certificate_location = get("ssl.certificate.location").map(PathBuf::from);
            let key_location = get("ssl.key.location").map(PathBuf::from);
            if certificate_location.is_some() != key_location.is_some() {
                return Err(GroupError::Config(
                    "ssl.certificate.location and ssl.key.location go together: give both or neither".into(),
                ));
            }
            Some(Tls {
                ca_location: get("ssl.ca.location").map(PathBuf::from),
                ca_pem: get("ssl.ca.pem").map(str::to_owned),
                certificate_location,
                key_location,
                key_password: props.get("ssl.key.password").cloned(),
                verify_hostname,
                verify_certificate: flag("enable.ssl.certificate.verification", true)?,
            })
        } else {
            None
        };
        let sasl = if sasl {
            let mechanism = get("sasl.mechanism")
                .or_else(|| get("sasl.mechanisms"))
                .unwrap_or("GSSAPI");
            let mechanism = match mechanism.to_ascii_uppercase().as_str() {
                "PLAIN" => Mechanism::Plain,
                "SCRAM-SHA-256" => Mechanism::ScramSha256,
                "SCRAM-SHA-512" => Mechanism::ScramSha512,
                other => {
                    return Err(GroupError::Config(format!(
                        "sasl.mechanism: {other} is not supported by the cluster's group member (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)"
                    )))
                }
            };
            let need = |k: &str| {
                props.get(k).cloned().ok_or_else(|| {
                    GroupError::Config(format!("{k}: required for SASL {}", mechanism.name()))
                })
            };
            Some(Sasl {
                mechanism,
                username: need("sasl.username")?,
                password: need("sasl.password")?,
            })
        } else {
            None
        };
        Ok(Security { tls, sasl })
    }

    /// Checks that the TLS files can be read and fit together.
    pub fn check(&self) -> Result<(), GroupError> {
        self.connector().map(|_| ())
    }

    /// The TLS connector these settings describe (`None` for plain TCP). Built once per
    /// connection: files are read again, so a renewed certificate is picked up.
    pub(crate) fn connector(&self) -> Result<Option<(SslConnector, bool)>, GroupError> {
        let Some(tls) = &self.tls else {
            return Ok(None);
        };
        let bad =
            |what: &str, e: &dyn std::fmt::Display| GroupError::Config(format!("{what}: {e}"));
        let mut builder =
            SslConnector::builder(SslMethod::tls_client()).map_err(|e| bad("TLS", &e))?;
        if let Some(ca) = &tls.ca_location {
            builder
                .set_ca_file(ca)
                .map_err(|e| bad(&format!("ssl.ca.location {}", ca.display()), &e))?;
        }
        if let Some(pem) = &tls.ca_pem {
            let certs = X509::stack_from_pem(pem.as_bytes()).map_err(|e| bad("ssl.ca.pem", &e))?;
            for cert in certs {
                builder
                    .cert_store_mut()
                    .add_cert(cert)
                    .map_err(|e| bad("ssl.ca.pem", &e))?;
            }
        }
        if let (Some(cert), Some(key)) = (&tls.certificate_location, &tls.key_location) {
            builder
                .set_certificate_chain_file(cert)
                .map_err(|e| bad(&format!("ssl.certificate.location {}", cert.display()), &e))?;
            let what = format!("ssl.key.location {}", key.display());
            match &tls.key_password {
                None => builder
                    .set_private_key_file(key, SslFiletype::PEM)
                    .map_err(|e| bad(&what, &e))?,
                Some(pass) => {
                    let pem = std::fs::read(key).map_err(|e| bad(&what, &e))?;
                    let pkey = PKey::private_key_from_pem_passphrase(&pem, pass.as_bytes())
                        .map_err(|e| bad(&what, &e))?;
                    builder.set_private_key(&pkey).map_err(|e| bad(&what, &e))?;
                }
            }
            builder.check_private_key().map_err(|e| {
                bad(
                    "ssl.key.location does not match ssl.certificate.location",
                    &e,
                )
            })?;
        }
        if !tls.verify_certificate {
            builder.set_verify(SslVerifyMode::NONE);
        }
        Ok(Some((builder.build(), tls.verify_hostname)))
    }
}

/// The digest a SCRAM mechanism is built on.
fn digest(mechanism: Mechanism) -> MessageDigest {
    match mechanism {
        Mechanism::ScramSha512 => MessageDigest::sha512(),
        Mechanism::ScramSha256 | Mechanism::Plain => MessageDigest::sha256(),
    }
}

fn hmac(md: MessageDigest, key: &[u8], data: &[u8]) -> Result<Vec<u8>, GroupError> {
    let scram = |e: openssl::error::ErrorStack| GroupError::Sasl(format!("HMAC: {e}"));
    let key = PKey::hmac(key).map_err(scram)?;
    let mut signer = Signer::new(md, &key).map_err(scram)?;
    signer.update(data).map_err(scram)?;
    signer.sign_to_vec().map_err(scram)
}

/// PLAIN's one message (RFC 4616): no authorization id, the user, the password.
pub(crate) fn plain_token(sasl: &Sasl) -> Vec<u8> {
    let mut token = Vec::with_capacity(sasl.username.len() + sasl.password.len() + 2);
    token.push(0);
    token.extend_from_slice(sasl.username.as_bytes());
    token.push(0);
    token.extend_from_slice(sasl.password.as_bytes());
    token
}

/// One SCRAM exchange (RFC 5802) on the client side: `first`, then `last` with the
/// server's first message, then `verify` with its final one.
pub(crate) struct Scram {
    md: MessageDigest,
    password: String,
    nonce: String,
    first_bare: String,
    /// The server's signature this exchange expects, once `last` has run.
    server_signature: Option<Vec<u8>>,
}

impl Scram {
    /// Starts an exchange with a fresh random nonce.
    pub(crate) fn new(sasl: &Sasl) -> Result<Self, GroupError> {
        let mut raw = [0_u8; 24];
        openssl::rand::rand_bytes(&mut raw)
            .map_err(|e| GroupError::Sasl(format!("random nonce: {e}")))?;
        Ok(Self::with_nonce(sasl, &openssl::base64::encode_block(&raw)))
    }

    fn with_nonce(sasl: &Sasl, nonce: &str) -> Self {
        // RFC 5802 5.1: ',' and '=' in a user name are escaped.
        let user = sasl.username.replace('=', "=3D").replace(',', "=2C");
        Scram {
            md: digest(sasl.mechanism),
            password: sasl.password.clone(),
            nonce: nonce.to_owned(),
            first_bare: format!("n={user},r={nonce}"),
            server_signature: None,
        }
    }

    /// The client's first message (no channel binding, no authorization id).
    pub(crate) fn first(&self) -> String {
        format!("n,,{}", self.first_bare)
    }

    /// The client's final message, proving the password, for the server's first message.
    pub(crate) fn last(&mut self, server_first: &[u8]) -> Result<String, GroupError> {
        let server_first = std::str::from_utf8(server_first)
            .map_err(|_| GroupError::Sasl("server-first-message is not UTF-8".into()))?;
        let field = |name: char| {
            server_first
                .split(',')
                .find_map(|part| part.strip_prefix(name).and_then(|p| p.strip_prefix('=')))
                .ok_or_else(|| {
                    GroupError::Sasl(format!(
                        "server-first-message {server_first:?} has no {name}= attribute"
                    ))
                })
        };
        let nonce = field('r')?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(GroupError::Sasl(
                "the server's nonce does not extend this client's".into(),
            ));
        }
        let salt = openssl::base64::decode_block(field('s')?)
            .map_err(|e| GroupError::Sasl(format!("salt is not base64: {e}")))?;
        let iterations: usize = field('i')?
            .parse()
            .map_err(|_| GroupError::Sasl("iteration count is not a number".into()))?;
        // Kafka's own minimum; a lower count from the server is a downgrade.
        if iterations < 4096 {
            return Err(GroupError::Sasl(format!(
                "iteration count {iterations} is below 4096"
            )));
        }
        let mut salted = vec![0_u8; self.md.size()];
        openssl::pkcs5::pbkdf2_hmac(
            self.password.as_bytes(),
            &salt,
            iterations,
            self.md,
            &mut salted,
        )
        .map_err(|e| GroupError::Sasl(format!("PBKDF2: {e}")))?;
        let client_key = hmac(self.md, &salted, b"Client Key")?;
        let stored_key = openssl::hash::hash(self.md, &client_key)
            .map_err(|e| GroupError::Sasl(format!("hash: {e}")))?;
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.first_bare);
        let signature = hmac(self.md, &stored_key, auth_message.as_bytes())?;
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac(self.md, &salted, b"Server Key")?;
        self.server_signature = Some(hmac(self.md, &server_key, auth_message.as_bytes())?);
        Ok(format!(
            "{without_proof},p={}",
            openssl::base64::encode_block(&proof)
        ))
    }

    /// Checks the server's final message: it proves the server knew the password too.
    pub(crate) fn verify(&self, server_final: &[u8]) -> Result<(), GroupError> {
        let text = String::from_utf8_lossy(server_final);
        if let Some(error) = text.strip_prefix("e=") {
            return Err(GroupError::Sasl(format!("the server refused: {error}")));
        }
        let given = text
            .strip_prefix("v=")
            .and_then(|v| openssl::base64::decode_block(v.trim()).ok())
            .ok_or_else(|| {
                GroupError::Sasl(format!("server-final-message {text:?} is malformed"))
            })?;
        match &self.server_signature {
            Some(expected) if openssl::memcmp::eq(expected, &given) => Ok(()),
            Some(_) => Err(GroupError::Sasl(
                "the server's signature does not match: it does not know this password".into(),
            )),
            None => Err(GroupError::Sasl(
                "server-final-message before the client's final".into(),
            )),
        }
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

    #[test]
    fn scram_sha256_matches_rfc7677s_example() -> Result<(), GroupError> {
        let sasl = Sasl {
            mechanism: Mechanism::ScramSha256,
            username: "user".into(),
            password: "pencil".into(),
        };
        let mut scram = Scram::with_nonce(&sasl, "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(scram.first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let last = scram.last(
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        )?;
        assert_eq!(
            last,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        scram.verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")?;
        let forged = scram.verify(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
        assert!(matches!(forged, Err(GroupError::Sasl(m)) if m.contains("does not match")));
        Ok(())
    }

    #[test]
    fn scram_refuses_a_nonce_it_did_not_start_and_a_weak_count() {
        let sasl = Sasl {
            mechanism: Mechanism::ScramSha512,
            username: "a,b=c".into(),
            password: "p".into(),
        };
        let mut scram = Scram::with_nonce(&sasl, "abc");
        assert_eq!(scram.first(), "n,,n=a=2Cb=3Dc,r=abc");
        assert!(scram.last(b"r=xyz123,s=AAAA,i=4096").is_err());
        let weak = scram.last(b"r=abc123,s=AAAA,i=1000");
        assert!(matches!(weak, Err(GroupError::Sasl(m)) if m.contains("below 4096")));
        assert!(scram.verify(b"e=invalid-proof").is_err());
    }

    #[test]
    fn plain_token_is_rfc4616s() {
        let sasl = Sasl {
            mechanism: Mechanism::Plain,
            username: "u".into(),
            password: "pw".into(),
        };
        assert_eq!(plain_token(&sasl), b"\0u\0pw");
    }

    #[test]
    fn settings_come_from_librdkafkas_keys_and_refusals_name_the_key() -> Result<(), GroupError> {
        let none = Security::from_client_props(&props(&[]))?;
        assert!(none.tls.is_none() && none.sasl.is_none());
        let full = Security::from_client_props(&props(&[
            ("security.protocol", "sasl_ssl"),
            ("ssl.ca.location", "/ca.pem"),
            ("ssl.endpoint.identification.algorithm", "none"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.username", "sluice"),
            ("sasl.password", "secret"),
        ]))?;
        let tls = full
            .tls
            .as_ref()
            .map(|t| (t.ca_location.clone(), t.verify_hostname));
        assert_eq!(tls, Some((Some(PathBuf::from("/ca.pem")), false)));
        assert_eq!(
            full.sasl.as_ref().map(|s| s.mechanism),
            Some(Mechanism::ScramSha512)
        );
        assert!(!format!("{full:?}").contains("secret"));

        let refused = |pairs: &[(&str, &str)], key: &str| {
            let err = Security::from_client_props(&props(pairs))
                .err()
                .map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e.contains(key)),
                "{pairs:?}: {err:?} should name {key}"
            );
        };
        refused(
            &[
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "GSSAPI"),
            ],
            "sasl.mechanism",
        );
        refused(&[("security.protocol", "SASL_PLAINTEXT")], "sasl.mechanism");
        refused(
            &[
                ("security.protocol", "SASL_PLAINTEXT"),
                ("sasl.mechanism", "PLAIN"),
                ("sasl.username", "u"),
            ],
            "sasl.password",
        );
        refused(
            &[
                ("security.protocol", "SSL"),
                ("ssl.keystore.location", "/k.p12"),
            ],
            "ssl.keystore.location",
        );
        refused(
            &[("security.protocol", "SSL"), ("ssl.key.location", "/k.pem")],
            "ssl.certificate.location",
        );
        refused(&[("security.protocol", "TLS")], "security.protocol");
        Ok(())
    }
}
