//! `receipt-exporter doctor`: the checklist, on stdout; exits 1 when any check fails.

use crate::exit::Exit;
use crate::ops::doctor::{self, Level};
use crate::settings::{Settings, SettingsError};

/// Runs with the settings as resolved (a bad one is the checklist's first line, not an exit).
pub async fn run(settings: Result<Settings, SettingsError>) -> anyhow::Result<Exit> {
    let checks = doctor::diagnose(settings).await;
    print!("{}", doctor::render(&checks));
    if checks.iter().any(|c| c.level == Level::Fail) {
        Ok(Exit::Failed)
    } else {
        Ok(Exit::Success)
    }
}
