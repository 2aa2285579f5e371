//! The Postgres roles: who may do what in the schema `receipts`.
//!
//! Two NOLOGIN group roles hold every right: [`WRITER`] (runs, backfills, retention and
//! maintenance) and [`READER`] (analysts); login roles are their members. `migrate` creates the
//! group roles when its role may (else it refuses, naming the SQL to run), and after the
//! migrations applies the grants script, `migrations/grants/grants.sql`, every time: an upgrade
//! needs no hand-written GRANT. [`NEEDS`] is what a run, a backfill, retention and maintenance
//! use, which `doctor` probes with `has_*_privilege` as the role it runs as, never by trying.
//! Nothing here prints.

use sqlx::{PgConnection, PgPool};

/// The group role of runs, backfills, retention and maintenance.
pub const WRITER: &str = "receipt_writer";
/// The group role of analysts: reads, and only reads.
pub const READER: &str = "receipt_reader";

/// Creates the group roles unless they exist: the start of the README's role SQL, and what
/// `migrate` runs itself when its role may create roles. Idempotent, also when two sessions
/// run it at once (the second one's duplicate is caught).
pub const CREATE_GROUP_ROLES: &str = "\
DO $$ BEGIN CREATE ROLE receipt_writer NOLOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
DO $$ BEGIN CREATE ROLE receipt_reader NOLOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
";

/// The grants script: exactly what the two group roles may do (it revokes everything first).
pub const GRANTS: &str = include_str!("../../migrations/grants/grants.sql");

/// Where [`GRANTS`] lives, for messages and tests.
pub const GRANTS_PATH: &str = "migrations/grants/grants.sql";

/// Why `migrate` may not go on with the role it runs as: the user's to fix (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    #[error("role {role} may not migrate: the schema receipts belongs to {owner}; run `receipt-exporter migrate` as {owner} (DATABASE_URL naming that role): the runs' role only reads and records")]
    NotOwner { role: String, owner: String },
    #[error("role {role} may not create the schema receipts in database {database}: run `receipt-exporter migrate` as the database's owner, or as its owner or a superuser run `GRANT CREATE ON DATABASE {database} TO {role};` first")]
    NoSchema { role: String, database: String },
    #[error("the group roles receipt_writer and receipt_reader do not exist and role {role} may not create them: run this once as a superuser or a role with CREATEROLE (the start of the README's role SQL), then migrate again: {}", CREATE_GROUP_ROLES.replace('\n', " ").trim_end())]
    NoGroupRoles { role: String },
    #[error("while checking the roles: {0}")]
    Postgres(#[from] sqlx::Error),
}

/// Refuses a role that cannot apply the migrations: the schema exists and is not its own, or
/// it does not exist and the role may not create it.
pub async fn check_may_migrate(conn: &mut PgConnection) -> Result<(), RoleError> {
    let (role, superuser, database, may_create): (String, bool, String, bool) = sqlx::query_as(
        "SELECT current_user::text, r.rolsuper, current_database()::text,
                has_database_privilege(current_database(), 'CREATE')
         FROM pg_roles r WHERE r.rolname = current_user",
    )
    .fetch_one(&mut *conn)
    .await?;
    let owner: Option<(String, bool)> = sqlx::query_as(
        "SELECT nspowner::regrole::text, pg_has_role(current_user, nspowner, 'USAGE')
         FROM pg_namespace WHERE nspname = 'receipts'",
    )
    .fetch_optional(&mut *conn)
    .await?;
    match owner {
        _ if superuser => Ok(()),
        Some((_, true)) => Ok(()),
        Some((owner, false)) => Err(RoleError::NotOwner { role, owner }),
        None if may_create => Ok(()),
        None => Err(RoleError::NoSchema { role, database }),
    }
}

/// Makes sure the group roles exist: creates them when this role may, else refuses with the
/// SQL that creates them.
pub async fn ensure_group_roles(conn: &mut PgConnection) -> Result<(), RoleError> {
    let (found, role, may): (i64, String, bool) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM pg_roles WHERE rolname IN ($1, $2)),
                current_user::text, rolsuper OR rolcreaterole
         FROM pg_roles WHERE rolname = current_user",
    )
    .bind(WRITER)
    .bind(READER)
    .fetch_one(&mut *conn)
    .await?;
    if found == 2 {
        return Ok(());
    }
    if !may {
        return Err(RoleError::NoGroupRoles { role });
    }
    sqlx::raw_sql(CREATE_GROUP_ROLES)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Applies the grants script in one transaction (readers never see the roles without rights).
pub async fn apply_grants(pool: &PgPool) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::raw_sql(GRANTS).execute(&mut *tx).await?;
    tx.commit().await
}

/// Which kind of process needs a right.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Use {
    /// `run` and `backfill` (the same pipeline, repair included).
    Run,
    /// `retention`, and a job's `retention_keep_months` after a scheduled run.
    Retention,
    /// `iceberg maintain`, `export parquet`, `lake verify --repair`, `progress rebuild`.
    Maintenance,
}

impl Use {
    pub fn as_str(self) -> &'static str {
        match self {
            Use::Run => "runs and backfills",
            Use::Retention => "retention",
            Use::Maintenance => "maintenance",
        }
    }
}

/// One right on one object of the schema: `right` on a table (all of it, or only `columns`),
/// or EXECUTE on a function (`object` is then its signature).
#[derive(Debug, Clone, Copy)]
pub struct Need {
    pub by: Use,
    pub right: &'static str,
    pub object: &'static str,
    pub columns: &'static [&'static str],
}

const fn need(by: Use, right: &'static str, object: &'static str) -> Need {
    Need {
        by,
        right,
        object,
        columns: &[],
    }
}

const fn cols(by: Use, object: &'static str, columns: &'static [&'static str]) -> Need {
    Need {
        by,
        right: "UPDATE",
        object,
        columns,
    }
}

/// Every right a run, a backfill, retention and maintenance use: what the grants script gives
/// [`WRITER`], and what `doctor` checks. (A test runs all of them as a member of the role.)
pub const NEEDS: &[Need] = &[
    need(Use::Run, "SELECT", "_sqlx_migrations"),
    need(Use::Run, "SELECT", "tracked_groups"),
    need(Use::Run, "SELECT", "seq_windows"),
    need(Use::Run, "SELECT", "receipt_snapshots"),
    need(Use::Run, "SELECT", "retired_runs"),
    need(Use::Run, "SELECT", "read_events_pruned"),
    need(Use::Run, "SELECT, INSERT, UPDATE", "export_runs"),
    need(Use::Run, "SELECT, INSERT", "backfills"),
    cols(Use::Run, "backfills", &["attempts", "resumed_at"]),
    need(Use::Run, "SELECT, INSERT, UPDATE, DELETE", "rate_leases"),
    need(Use::Run, "SELECT, INSERT", "receipt_snapshot_rows"),
    need(Use::Run, "SELECT, INSERT", "snapshot_groups"),
    need(Use::Run, "SELECT, INSERT", "receipt_item_codes"),
    need(Use::Run, "SELECT, INSERT, UPDATE", "receipt_latest"),
    need(Use::Run, "SELECT, INSERT, UPDATE", "message_read_progress"),
    need(
        Use::Run,
        "SELECT, INSERT, UPDATE",
        "message_read_progress_changes",
    ),
    need(Use::Run, "SELECT, INSERT", "message_read_progress_files"),
    cols(
        Use::Run,
        "message_read_progress_files",
        &[
            "path",
            "row_count",
            "byte_size",
            "committed_through",
            "committed_rows",
        ],
    ),
    need(Use::Run, "SELECT, INSERT", "read_events"),
    need(Use::Run, "SELECT, INSERT, UPDATE", "read_list_pulls"),
    need(Use::Run, "SELECT, INSERT", "read_event_files"),
    need(Use::Run, "SELECT, INSERT", "write_batches"),
    cols(Use::Run, "write_batches", &["parquet_file_id"]),
    need(Use::Run, "SELECT, INSERT", "parquet_files"),
    cols(Use::Run, "parquet_files", &["pending_key", "byte_size"]),
    need(Use::Run, "SELECT, INSERT", "iceberg_tables"),
    need(Use::Run, "SELECT, INSERT", "lake_identity"),
    need(Use::Run, "SELECT, INSERT, DELETE", "iceberg_pending_files"),
    cols(
        Use::Run,
        "iceberg_tables",
        &["metadata_location", "previous_metadata_location"],
    ),
    need(
        Use::Run,
        "EXECUTE",
        "receipts.ensure_snapshot_partitions(integer)",
    ),
    need(
        Use::Run,
        "EXECUTE",
        "receipts.forget_parquet_files(bigint[])",
    ),
    need(Use::Maintenance, "SELECT, INSERT, UPDATE", "check_outcomes"),
    need(
        Use::Maintenance,
        "EXECUTE",
        "receipts.rebuild_message_read_progress()",
    ),
    need(Use::Retention, "SELECT", "read_event_runs_pruned"),
    need(Use::Retention, "SELECT", "receipt_snapshot_rows_default"),
    need(
        Use::Retention,
        "EXECUTE",
        "receipts.snapshot_month_runs(date)",
    ),
    need(
        Use::Retention,
        "EXECUTE",
        "receipts.drop_snapshot_month(date)",
    ),
    need(
        Use::Retention,
        "EXECUTE",
        "receipts.prunable_item_codes(date,integer)",
    ),
    need(
        Use::Retention,
        "EXECUTE",
        "receipts.prune_item_codes(date,integer,bigint)",
    ),
    need(
        Use::Retention,
        "EXECUTE",
        "receipts.read_event_messages_before(date)",
    ),
    need(
        Use::Retention,
        "EXECUTE",
        "receipts.read_event_runs_before(date)",
    ),
    need(
        Use::Retention,
        "EXECUTE",
        "receipts.prune_read_events(date)",
    ),
    need(
        Use::Maintenance,
        "EXECUTE",
        "receipts.forget_parquet_files(bigint[])",
    ),
    need(
        Use::Maintenance,
        "EXECUTE",
        "receipts.forget_read_event_files(bigint,date[])",
    ),
];

/// Rights a writer must not hold: with them it could rewrite what it recorded (snapshots,
/// codes, read events, what retention removed, a file's row count, the catalog's table).
pub const EXCESS: &[Need] = &[
    need(Use::Run, "UPDATE, DELETE", "receipt_snapshot_rows"),
    need(Use::Run, "UPDATE, DELETE", "receipt_item_codes"),
    need(Use::Run, "UPDATE, DELETE", "read_events"),
    need(Use::Run, "INSERT, UPDATE, DELETE", "retired_runs"),
    need(Use::Run, "INSERT, UPDATE, DELETE", "read_events_pruned"),
    need(Use::Run, "DELETE", "write_batches"),
    need(Use::Run, "DELETE", "parquet_files"),
    cols(Use::Run, "parquet_files", &["row_count"]),
    need(Use::Run, "DELETE", "read_event_files"),
    need(Use::Run, "DELETE", "iceberg_tables"),
    need(Use::Run, "UPDATE, DELETE", "lake_identity"),
];

impl Need {
    /// Each single right it stands for, as `doctor` names it.
    fn parts(&self) -> Vec<(String, &'static str)> {
        let on = if self.right == "EXECUTE" {
            self.object.to_string()
        } else if self.columns.is_empty() {
            format!("receipts.{}", self.object)
        } else {
            format!("receipts.{} ({})", self.object, self.columns.join(", "))
        };
        self.right
            .split(", ")
            .map(|right| (format!("{right} on {on}"), right))
            .collect()
    }
}

/// The named rights among `needs` that the current role does not hold (by inheritance from
/// its group roles included), each with who needs it.
pub async fn lacking(pool: &PgPool, needs: &[Need]) -> sqlx::Result<Vec<(Use, String)>> {
    let mut out = Vec::new();
    for n in needs {
        for (name, right) in n.parts() {
            if !holds(pool, n, right).await? {
                out.push((n.by, name));
            }
        }
    }
    Ok(out)
}

/// The named rights among `needs` the current role holds.
pub async fn holding(pool: &PgPool, needs: &[Need]) -> sqlx::Result<Vec<String>> {
    let mut out = Vec::new();
    for n in needs {
        for (name, right) in n.parts() {
            if holds(pool, n, right).await? {
                out.push(name);
            }
        }
    }
    Ok(out)
}

async fn holds(pool: &PgPool, n: &Need, right: &str) -> sqlx::Result<bool> {
    let table = format!("receipts.{}", n.object);
    if right == "EXECUTE" {
        return sqlx::query_scalar(
            "SELECT to_regprocedure($1) IS NOT NULL
                    AND has_function_privilege(to_regprocedure($1), 'EXECUTE')",
        )
        .bind(n.object)
        .fetch_one(pool)
        .await;
    }
    if n.columns.is_empty() {
        return sqlx::query_scalar(
            "SELECT to_regclass($1) IS NOT NULL AND has_table_privilege(to_regclass($1), $2)",
        )
        .bind(&table)
        .bind(right)
        .fetch_one(pool)
        .await;
    }
    sqlx::query_scalar(
        "SELECT to_regclass($1) IS NOT NULL
                AND bool_and(has_column_privilege(to_regclass($1), c, $2))
         FROM unnest($3::text[]) c",
    )
    .bind(&table)
    .bind(right)
    .bind(n.columns)
    .fetch_one(pool)
    .await
}

/// Who the current role is: its name, whether it is a member of [`WRITER`], and whether it
/// owns the schema (or is a superuser), which holds every right anyway.
pub async fn whoami(pool: &PgPool) -> sqlx::Result<(String, bool, bool)> {
    sqlx::query_as(
        "SELECT current_user::text,
                EXISTS (SELECT 1 FROM pg_roles w WHERE w.rolname = $1
                        AND pg_has_role(current_user, w.oid, 'MEMBER')),
                (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
                OR EXISTS (SELECT 1 FROM pg_namespace n WHERE n.nspname = 'receipts'
                           AND pg_has_role(current_user, n.nspowner, 'USAGE'))",
    )
    .bind(WRITER)
    .fetch_one(pool)
    .await
}

/// The owner of the schema `receipts`, for messages (`None`: no schema yet).
pub async fn schema_owner(pool: &PgPool) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar(
        "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'receipts'",
    )
    .fetch_optional(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_need_names_each_right_on_its_object() {
        let n = need(Use::Run, "SELECT, INSERT", "export_runs");
        let names: Vec<String> = n.parts().into_iter().map(|(name, _)| name).collect();
        assert_eq!(
            names,
            [
                "SELECT on receipts.export_runs",
                "INSERT on receipts.export_runs"
            ]
        );
        let c = cols(Use::Run, "parquet_files", &["pending_key", "byte_size"]);
        assert_eq!(
            c.parts()[0].0,
            "UPDATE on receipts.parquet_files (pending_key, byte_size)"
        );
        let f = need(
            Use::Retention,
            "EXECUTE",
            "receipts.drop_snapshot_month(date)",
        );
        assert_eq!(
            f.parts()[0].0,
            "EXECUTE on receipts.drop_snapshot_month(date)"
        );
    }

    #[test]
    fn the_grants_script_names_every_function_the_writer_needs() {
        for n in NEEDS.iter().filter(|n| n.right == "EXECUTE") {
            let name = n.object.split('(').next().unwrap();
            assert!(GRANTS.contains(name), "{name} is not in {GRANTS_PATH}");
        }
    }
}
