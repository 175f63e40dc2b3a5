//! TLS for the TCP listener (syslog over TLS, RFC 5425), with Confluent's keys: a PEM
//! certificate chain and private key (optionally encrypted), or a generated self-signed
//! certificate; optionally client certificates checked against a CA file.

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::ssl::{SslAcceptor, SslMethod, SslVerifyMode};
use openssl::x509::{X509NameBuilder, X509};

/// Where the server's identity comes from.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// `syslog.ssl.cert.chain.path`.
    pub cert_chain: String,
    /// `syslog.ssl.key.path`.
    pub key: String,
    /// `syslog.ssl.key.password` (empty: the key is not encrypted).
    pub key_password: String,
    /// `syslog.ssl.self.signed.certificate.enable`.
    pub self_signed: bool,
    /// `syslog.ssl.client.ca.path` (empty: clients are not asked for a certificate).
    pub client_ca: String,
}

fn read(path: &str, key: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{key}: reading {path}: {e}"))
}

/// A self-signed RSA certificate for `CN=sluice`, valid a year from now.
fn self_signed() -> Result<(X509, PKey<Private>), openssl::error::ErrorStack> {
    let key = PKey::from_rsa(Rsa::generate(2048)?)?;
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_text("CN", "sluice")?;
    let name = name.build();
    let mut serial = BigNum::new()?;
    serial.rand(64, MsbOption::MAYBE_ZERO, false)?;
    let mut cert = X509::builder()?;
    cert.set_version(2)?;
    let serial = serial.to_asn1_integer()?;
    cert.set_serial_number(&serial)?;
    cert.set_subject_name(&name)?;
    cert.set_issuer_name(&name)?;
    cert.set_pubkey(&key)?;
    let (from, to) = (Asn1Time::days_from_now(0)?, Asn1Time::days_from_now(365)?);
    cert.set_not_before(&from)?;
    cert.set_not_after(&to)?;
    cert.sign(&key, MessageDigest::sha256())?;
    Ok((cert.build(), key))
}

/// Builds the acceptor; every error names the key and file at fault.
pub fn acceptor(settings: &TlsSettings) -> Result<SslAcceptor, String> {
    use crate::config::{
        SSL_CERT_CHAIN, SSL_CLIENT_CA, SSL_KEY, SSL_KEY_PASSWORD, SSL_SELF_SIGNED,
    };
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())
        .map_err(|e| format!("TLS setup: {e}"))?;
    if settings.self_signed {
        let (cert, key) = self_signed().map_err(|e| format!("{SSL_SELF_SIGNED}: {e}"))?;
        builder
            .set_certificate(&cert)
            .and_then(|()| builder.set_private_key(&key))
            .map_err(|e| format!("{SSL_SELF_SIGNED}: {e}"))?;
    } else {
        if settings.cert_chain.is_empty() || settings.key.is_empty() {
            return Err(format!(
                "TCPSSL needs {SSL_CERT_CHAIN} and {SSL_KEY} (or {SSL_SELF_SIGNED}=true)"
            ));
        }
        let chain =
            X509::stack_from_pem(&read(&settings.cert_chain, SSL_CERT_CHAIN)?).map_err(|e| {
                format!(
                    "{SSL_CERT_CHAIN}: {} is not PEM certificates: {e}",
                    settings.cert_chain
                )
            })?;
        let mut certs = chain.into_iter();
        let leaf = certs.next().ok_or_else(|| {
            format!(
                "{SSL_CERT_CHAIN}: {} holds no certificate",
                settings.cert_chain
            )
        })?;
        builder
            .set_certificate(&leaf)
            .map_err(|e| format!("{SSL_CERT_CHAIN}: {e}"))?;
        for intermediate in certs {
            builder
                .add_extra_chain_cert(intermediate)
                .map_err(|e| format!("{SSL_CERT_CHAIN}: {e}"))?;
        }
        let pem = read(&settings.key, SSL_KEY)?;
        let key = if settings.key_password.is_empty() {
            PKey::private_key_from_pem(&pem)
                .map_err(|e| format!("{SSL_KEY}: {} is not an unencrypted PEM private key (set {SSL_KEY_PASSWORD} if it is encrypted): {e}", settings.key))?
        } else {
            PKey::private_key_from_pem_passphrase(&pem, settings.key_password.as_bytes()).map_err(
                |e| {
                    format!(
                        "{SSL_KEY}: cannot decrypt {} with {SSL_KEY_PASSWORD}: {e}",
                        settings.key
                    )
                },
            )?
        };
        builder
            .set_private_key(&key)
            .map_err(|e| format!("{SSL_KEY}: {e}"))?;
        builder.check_private_key().map_err(|e| {
            format!("{SSL_KEY}: does not match the certificate in {SSL_CERT_CHAIN}: {e}")
        })?;
    }
    if !settings.client_ca.is_empty() {
        builder
            .set_ca_file(&settings.client_ca)
            .map_err(|e| format!("{SSL_CLIENT_CA}: {}: {e}", settings.client_ca))?;
        builder.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    }
    Ok(builder.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> TlsSettings {
        TlsSettings {
            cert_chain: String::new(),
            key: String::new(),
            key_password: String::new(),
            self_signed: false,
            client_ca: String::new(),
        }
    }

    #[test]
    fn errors_name_the_key_at_fault() {
        let e = acceptor(&settings()).err().unwrap_or_default();
        assert!(e.contains("syslog.ssl.cert.chain.path"), "{e}");
        let e = acceptor(&TlsSettings {
            cert_chain: "/nonexistent/chain.pem".into(),
            key: "/nonexistent/key.pem".into(),
            ..settings()
        })
        .err()
        .unwrap_or_default();
        assert!(
            e.starts_with("syslog.ssl.cert.chain.path: reading /nonexistent/chain.pem"),
            "{e}"
        );
    }

    #[test]
    fn a_self_signed_certificate_can_be_generated() {
        assert!(acceptor(&TlsSettings {
            self_signed: true,
            ..settings()
        })
        .is_ok());
    }
}
