//! `receipt-exporter migrate`: applies the embedded migrations, then the group roles' grants;
//! idempotent. Run as the schema's owner (anyone else is refused with the fix, exit 2).

use crate::db::roles;
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
    println!(
        "granted {} and {} the rights of this version ({})",
        roles::WRITER,
        roles::READER,
        roles::GRANTS_PATH
    );
    Ok(Exit::Success)
}
