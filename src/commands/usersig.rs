//! `receipt-exporter usersig`: prints a UserSig for operators who debug with curl. The only
//! place a UserSig is ever printed.

use crate::cli::UsersigArgs;
use crate::exit::Exit;
use crate::settings::Settings;

pub async fn run(settings: &Settings, args: UsersigArgs) -> anyhow::Result<Exit> {
    let sdkappid = settings.require_sdkappid()?;
    let key = settings.require_secret_key()?;
    let now = chrono::Utc::now().timestamp();
    let sig =
        crate::chat::usersig::generate(&key, sdkappid, &settings.identifier, args.expire, now);
    println!("{}", sig.expose());
    Ok(Exit::Success)
}
