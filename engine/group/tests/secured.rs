//! The member over the local stack's secured listeners: TLS (with and without a client
//! certificate) and SASL PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 over TLS.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use common::{config, start};
use sluice_group::{GroupError, Member, MemberConfig, Security};
use sluice_testkit::{stack, unique_name};

const WAIT: Duration = Duration::from_secs(60);

fn secured(
    bootstrap: &str,
    group: &str,
    name: &str,
    props: &[(&str, String)],
) -> Result<MemberConfig> {
    let props: BTreeMap<String, String> = props
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    let mut c = config(bootstrap, group, name);
    c.security = Security::from_client_props(&props)?;
    Ok(c)
}

fn sasl(mechanism: &str, password: &str) -> Result<Vec<(&'static str, String)>> {
    let stack = stack()?;
    let (user, _) = stack.kafka_sasl();
    Ok(vec![
        ("security.protocol", "SASL_SSL".into()),
        (
            "ssl.ca.location",
            stack.kafka_tls().ca.display().to_string(),
        ),
        ("sasl.mechanism", mechanism.into()),
        ("sasl.username", user.into()),
        ("sasl.password", password.into()),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_log_in_with_each_sasl_mechanism_and_join_one_group() -> Result<()> {
    let stack = stack()?;
    let (_, password) = stack.kafka_sasl();
    let group = unique_name("group");
    let mut members = Vec::new();
    for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let c = secured(
            &stack.kafka_sasl_ssl_bootstrap,
            &group,
            mechanism,
            &sasl(mechanism, password)?,
        )?;
        Member::probe(&c).await?;
        members.push(start(c)?);
    }
    // All three reach one generation with one leader: they joined the same group.
    let mut generations = Vec::new();
    for m in &mut members {
        generations.push(m.assigned(WAIT).await?);
    }
    loop {
        let top = generations.iter().map(|a| a.generation).max().unwrap_or(0);
        if generations.iter().all(|a| a.generation == top) {
            break;
        }
        for (i, m) in members.iter_mut().enumerate() {
            if generations[i].generation < top {
                generations[i] = m.assigned(WAIT).await?;
            }
        }
    }
    assert_eq!(generations.iter().filter(|a| a.is_leader()).count(), 1);
    for m in members {
        m.member.leave().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_joins_over_tls_with_and_without_a_client_certificate() -> Result<()> {
    let stack = stack()?;
    let tls = stack.kafka_tls();
    let group = unique_name("group");
    let ca = ("ssl.ca.location", tls.ca.display().to_string());
    let plain_tls = secured(
        &stack.kafka_ssl_bootstrap,
        &group,
        "tls",
        &[("security.protocol", "SSL".into()), ca.clone()],
    )?;
    let mutual = secured(
        &stack.kafka_ssl_bootstrap,
        &group,
        "mtls",
        &[
            ("security.protocol", "SSL".into()),
            ca,
            (
                "ssl.certificate.location",
                tls.client_certificate.display().to_string(),
            ),
            ("ssl.key.location", tls.client_key.display().to_string()),
        ],
    )?;
    let mut a = start(plain_tls)?;
    let mut b = start(mutual)?;
    a.assigned(WAIT).await?;
    b.assigned(WAIT).await?;
    a.member.leave().await;
    b.member.leave().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_or_an_unknown_ca_is_refused_by_name() -> Result<()> {
    let stack = stack()?;
    let group = unique_name("group");
    let (user, _) = stack.kafka_sasl();
    for mechanism in ["PLAIN", "SCRAM-SHA-512"] {
        let c = secured(
            &stack.kafka_sasl_ssl_bootstrap,
            &group,
            "bad",
            &sasl(mechanism, "not-the-password")?,
        )?;
        let err = Member::probe(&c).await.err();
        let text = err.as_ref().map(ToString::to_string).unwrap_or_default();
        assert!(
            matches!(err, Some(GroupError::Sasl(_))),
            "{mechanism}: {err:?}"
        );
        assert!(text.contains(mechanism) && text.contains(user), "{text}");
    }
    // The system's CAs do not know the stack's own: the handshake fails, and says so.
    let c = secured(
        &stack.kafka_ssl_bootstrap,
        &group,
        "untrusting",
        &[("security.protocol", "SSL".into())],
    )?;
    let err = Member::probe(&c).await.err();
    let text = err.as_ref().map(ToString::to_string).unwrap_or_default();
    assert!(matches!(err, Some(GroupError::Tls { .. })), "{err:?}");
    assert!(text.contains("certificate verify failed"), "{text}");
    Ok(())
}
