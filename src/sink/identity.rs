//! The lake's identity, recorded in the database (`receipts.lake_identity`): where the lake is
//! (its location, normalised: `/x`, `file:/x` and `file:///x` are one) and which form its
//! snapshot table has (`parquet`, Hive-style, or `iceberg`). Without it, a process started
//! with another `EXPORT_PARQUET_DIR` or without `EXPORT_TABLE_FORMAT` writes a second lake
//! beside the first, and the manifest counts those rows as in "the lake" (retention then drops
//! them from Postgres).
//!
//! It is recorded on first use by a command that writes the lake. An existing database is
//! recorded at its first such command after the upgrade from what its history shows: a table in
//! the Iceberg catalog means Iceberg, at the lake that holds it; else Hive-style, at the
//! location of that command's settings. From then on every command that uses the lake checks
//! its settings against the record before it writes anything and refuses another location or
//! format ([`OtherLake`], exit 2), naming the recorded ones. Changing them on purpose is one
//! command, `lake move` ([`moved`]), which must be told the recorded location.

use super::SinkError;
use crate::lake::Lake;
use crate::settings::TableFormat;
use sqlx::PgPool;

/// Where the lake is and which form it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Normalised ([`crate::lake::Location::normalized`]).
    pub location: String,
    pub format: TableFormat,
}

impl Identity {
    /// The identity a process's settings give.
    pub fn of(lake: &Lake, format: TableFormat) -> Identity {
        Identity {
            location: lake.normalized(),
            format,
        }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at {}", self.format.as_str(), self.location)
    }
}

/// The process's settings name another lake than the one recorded.
#[derive(Debug, thiserror::Error)]
#[error(
    "this database's lake is {recorded} (recorded in receipts.lake_identity), and this process \
     was started with {given}: nothing was written; set EXPORT_PARQUET_DIR={location} and \
     EXPORT_TABLE_FORMAT={format} as the database's other processes do; to move the lake (or \
     change its table format) on purpose, run `receipt-exporter lake move --from {location} \
     --to LOCATION [--to-format parquet|iceberg]` (README, \"Moving the lake\")",
    location = recorded.location,
    format = recorded.format.as_str()
)]
pub struct OtherLake {
    pub recorded: Identity,
    pub given: Identity,
}

/// The recorded identity (`None`: nothing recorded yet).
pub async fn recorded(pool: &PgPool) -> Result<Option<Identity>, SinkError> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT location, table_format FROM receipts.lake_identity")
            .fetch_optional(pool)
            .await
            .map_err(SinkError::pg("reading the lake's identity"))?;
    Ok(row.map(|(location, format)| Identity {
        location,
        format: TableFormat::parse(&format).unwrap_or(TableFormat::Parquet),
    }))
}

/// Checks the process's lake against the recorded identity, or, with nothing recorded yet,
/// against what the database's history shows ([`inferred`]); refuses a mismatch with
/// [`OtherLake`]. Returns whether an identity is recorded (false: the first use records one,
/// [`record`]). Changes nothing.
pub async fn check(pool: &PgPool, given: &Identity) -> anyhow::Result<bool> {
    let (recorded, found) = match recorded(pool).await? {
        Some(recorded) => (true, recorded),
        None => (false, inferred(pool, given).await?),
    };
    match found == *given {
        true => Ok(recorded),
        false => Err(OtherLake {
            recorded: found,
            given: given.clone(),
        }
        .into()),
    }
}

/// The first use: records `given` unless an identity is recorded already, then checks again
/// (another process may have recorded another meanwhile). Called once the lake proved usable
/// (its marker read or claimed), so a location that never worked is not recorded.
pub async fn record(pool: &PgPool, given: &Identity) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO receipts.lake_identity (location, table_format) VALUES ($1, $2)
         ON CONFLICT DO NOTHING",
    )
    .bind(&given.location)
    .bind(given.format.as_str())
    .execute(pool)
    .await
    .map_err(SinkError::pg("recording the lake's identity"))?;
    check(pool, given).await.map(drop)
}

/// What a first use records: a table in the Iceberg catalog means Iceberg, at the lake its
/// location is in; files in the manifest mean Hive-style, at the process's location; a
/// database with neither takes the process's settings.
async fn inferred(pool: &PgPool, given: &Identity) -> Result<Identity, SinkError> {
    let table: Option<Option<String>> = sqlx::query_scalar(
        "SELECT metadata_location FROM receipts.iceberg_tables
         WHERE catalog_name = $1 AND table_namespace = $2 AND table_name = $3",
    )
    .bind(super::iceberg::CATALOG)
    .bind(super::iceberg::NAMESPACE)
    .bind(super::iceberg::TABLE)
    .fetch_optional(pool)
    .await
    .map_err(SinkError::pg("reading the Iceberg catalog"))?;
    let suffix = format!(
        "/{}/{}/metadata/",
        super::iceberg::NAMESPACE,
        super::iceberg::TABLE
    );
    if let Some(metadata) = table.flatten() {
        // `<lake>/receipts/receipt_snapshots/metadata/...`: the lake is what precedes the table.
        let location = match metadata.rfind(&suffix) {
            Some(at) => metadata[..at].to_string(),
            None => given.location.clone(),
        };
        return Ok(Identity {
            location,
            format: TableFormat::Iceberg,
        });
    }
    let hive: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM receipts.parquet_files)")
        .fetch_one(pool)
        .await
        .map_err(SinkError::pg("reading the manifest"))?;
    Ok(Identity {
        location: given.location.clone(),
        format: if hive {
            TableFormat::Parquet
        } else {
            given.format
        },
    })
}

/// Whether `lake move --from FROM` to `to` may happen: something is recorded, `from` names it
/// (normalised), and `to` differs from it. Returns the recorded identity.
pub async fn check_move(pool: &PgPool, from: &str, to: &Identity) -> anyhow::Result<Identity> {
    let Some(recorded) = recorded(pool).await? else {
        anyhow::bail!(SinkError::Config(
            "lake move: no lake is recorded for this database yet, so there is nothing to move: \
             the next command that writes the lake records its settings (EXPORT_PARQUET_DIR, \
             EXPORT_TABLE_FORMAT)"
                .into()
        ));
    };
    if recorded.location != from {
        anyhow::bail!(SinkError::Config(format!(
            "lake move: --from {from} is not this database's lake, which is {recorded}: name the \
             recorded location in --from"
        )));
    }
    if recorded == *to {
        anyhow::bail!(SinkError::Config(format!(
            "lake move: this database's lake is already {recorded}: nothing to move"
        )));
    }
    Ok(recorded)
}

/// `lake move`: records `to` as the lake's identity in place of the recorded one, which `from`
/// must name ([`check_move`]): a move is said twice, so it cannot happen by accident. The
/// previous values are kept beside. Returns the identity replaced.
pub async fn moved(pool: &PgPool, from: &str, to: &Identity) -> anyhow::Result<Identity> {
    let recorded = check_move(pool, from, to).await?;
    let done = sqlx::query(
        "UPDATE receipts.lake_identity
         SET location = $2, table_format = $3, previous_location = location,
             previous_table_format = table_format, recorded_at = now(), recorded_by = current_user
         WHERE location = $1",
    )
    .bind(from)
    .bind(&to.location)
    .bind(to.format.as_str())
    .execute(pool)
    .await
    .map_err(SinkError::pg("recording the lake's new identity"))?;
    anyhow::ensure!(
        done.rows_affected() == 1,
        "lake move: the lake's identity changed meanwhile: run the command again"
    );
    Ok(recorded)
}
