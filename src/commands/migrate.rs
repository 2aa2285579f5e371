//! `receipt-exporter migrate`: applies the embedded migrations; idempotent.

use crate::exit::Exit;
use crate::settings::Settings;

pub async fn run(settings: &Settings) -> anyhow::Result<Exit> {
    let options = settings.require_database()?;
    let pool = crate::db::connect(options).await?;
    let applied = crate::db::migrate(&pool).await?;
    if applied.is_empty() {
        println!(
            "database {} is up to date: nothing to apply",
            crate::db::describe(options)
        );
    }
    for (version, description) in &applied {
        println!("applied {version} {description}");
    }
    Ok(Exit::Success)
}
