//! The local stack script's promises, checked on a private state directory and free
//! ports so the shared stack is untouched: `up` twice is harmless, `down` leaves no process
//! of ours behind, and a taken port is named with its holder.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context as _, Result};
use sluice_testkit::{free_port, stack_script, unique_name};

struct StateDir(PathBuf);

impl StateDir {
    fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(unique_name("sluice-stack-test"));
        std::fs::create_dir_all(&dir)?;
        Ok(StateDir(dir))
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = run(&self.0, 0, &["down"]);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(state: &Path, prometheus_port: u16, args: &[&str]) -> Result<Output> {
    Command::new("bash")
        .arg(stack_script())
        .args(args)
        .env("SLUICE_STACK_DIR", state)
        .env("SLUICE_PROMETHEUS_PORT", prometheus_port.to_string())
        .output()
        .context("running the stack script")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Processes whose command line mentions `state`: ours.
fn processes_under(state: &Path) -> Result<Vec<String>> {
    let needle = state.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.chars().all(|c| c.is_ascii_digit()))
        else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(&needle) {
                found.push(format!("{pid}: {cmdline}"));
            }
        }
    }
    Ok(found)
}

#[test]
fn up_twice_is_harmless_and_down_leaves_nothing_behind() -> Result<()> {
    sluice_testkit::stack()?; // installs what the script needs, as any test would
    let state = StateDir::new()?;
    let port = free_port()?;

    let first = run(&state.0, port, &["up", "prometheus"])?;
    assert!(first.status.success(), "{}", text(&first));
    assert!(text(&first).contains("prometheus: up"), "{}", text(&first));
    assert_eq!(
        processes_under(&state.0)?.len(),
        1,
        "{:?}",
        processes_under(&state.0)?
    );

    let second = run(&state.0, port, &["up", "prometheus"])?;
    assert!(second.status.success(), "{}", text(&second));
    assert!(text(&second).contains("already up"), "{}", text(&second));
    assert_eq!(processes_under(&state.0)?.len(), 1);

    let status = run(&state.0, port, &["status"])?;
    assert!(
        text(&status).contains(&format!("port {port}")),
        "{}",
        text(&status)
    );

    let down = run(&state.0, port, &["down", "prometheus"])?;
    assert!(down.status.success(), "{}", text(&down));
    assert!(
        processes_under(&state.0)?.is_empty(),
        "{:?}",
        processes_under(&state.0)?
    );
    Ok(())
}

#[test]
fn a_taken_port_is_named_with_its_holder() -> Result<()> {
    let state = StateDir::new()?;
    let squatter = TcpListener::bind("127.0.0.1:0")?;
    let port = squatter.local_addr()?.port();
    let out = run(&state.0, port, &["up", "prometheus"])?;
    assert!(!out.status.success());
    let message = text(&out);
    assert!(
        message.contains(&format!("port {port} (prometheus) is already taken")),
        "{message}"
    );
    assert!(message.contains("SLUICE_PROMETHEUS_PORT"), "{message}");
    assert!(
        message.contains(&format!("pid={}", std::process::id())),
        "{message}"
    );
    assert!(processes_under(&state.0)?.is_empty());
    Ok(())
}

#[test]
fn an_unknown_service_or_command_is_refused() -> Result<()> {
    let state = StateDir::new()?;
    let out = run(&state.0, 0, &["up", "kafak"])?;
    assert!(!out.status.success());
    assert!(
        text(&out).contains("unknown service 'kafak'"),
        "{}",
        text(&out)
    );
    let out = run(&state.0, 0, &["start"])?;
    assert!(!out.status.success());
    assert!(text(&out).contains("usage:"), "{}", text(&out));
    Ok(())
}
