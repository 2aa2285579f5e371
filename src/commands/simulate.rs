//! `receipt-exporter simulate`: the Chat API simulator as a server of its own.

use crate::exit::Exit;
use crate::settings::Settings;
use crate::sim::SimArgs;

pub async fn run(settings: &Settings, args: SimArgs) -> anyhow::Result<Exit> {
    let sdkappid = settings.require_sdkappid()?;
    let key = settings.require_secret_key()?;
    let stop = super::run::stop_on_signal();
    crate::sim::serve(
        args,
        sdkappid,
        key,
        settings.identifier.clone(),
        settings.callback_token.clone(),
        async move { stop.cancelled().await },
    )
    .await?;
    Ok(Exit::Success)
}
