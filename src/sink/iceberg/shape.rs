//! The table's shape as the exporter writes it: its schema and partition spec. Another engine
//! may change either (Spark's `ALTER TABLE ... ADD COLUMN`, `ADD PARTITION FIELD`, pyiceberg's
//! `update_schema`/`update_spec`); the writer's files would then not fit the table (a file
//! without the new column's id, a partition tuple one field short), so a run, a repair and
//! every commit refuse such a table (exit 2), naming the change and how to undo it, before
//! anything is written. Changes the exporter makes itself are in [`OWN_SCHEMAS`]: they are
//! not another engine's. Fields are compared by id, name, type and nullability, and the spec
//! by its fields, never by schema or spec ids (dropping a column added by mistake makes a new
//! schema id with the exporter's fields: accepted).

use super::{first_schema, partition_spec, table_schema, PARTITION_FIELD, TABLE};
use crate::sink::SinkError;
use iceberg::spec::{NestedFieldRef, Schema, Transform};
use iceberg::table::Table;

/// The schemas the exporter itself has given the table, oldest first. A schema evolution of
/// the exporter's own adds its schema here: `sdkappid` (field 7, issue 26).
pub fn own_schemas() -> Vec<Schema> {
    vec![first_schema(), table_schema()]
}

/// Refuses a table whose current schema or default partition spec is not one the exporter
/// writes.
pub fn check(table: &Table) -> Result<(), SinkError> {
    let metadata = table.metadata();
    let schema = metadata.current_schema();
    let mut changes = Vec::new();
    let own = own_schemas();
    if !own.iter().any(|o| same_fields(o, schema)) {
        changes.push(schema_change(own.last().expect("one schema"), schema));
    }
    if let Some(change) = spec_change(table) {
        changes.push(change);
    }
    if changes.is_empty() {
        return Ok(());
    }
    Err(SinkError::ForeignChange(format!(
        "the Iceberg table receipts.{TABLE} was changed by another engine: {}. Nothing was \
         written; the exporter writes only its own schema and the partition spec \
         {PARTITION_FIELD}=day(captured_at), so undo the change and run again (README, \"The \
         Iceberg table\")",
        changes.join("; ")
    )))
}

/// What another engine changed in the default partition spec, if anything.
fn spec_change(table: &Table) -> Option<String> {
    let metadata = table.metadata();
    let schema = metadata.current_schema();
    let spec = metadata.default_partition_spec();
    let found: Vec<(i32, String, Transform)> = spec
        .fields()
        .iter()
        .map(|f| (f.source_id, f.name.clone(), f.transform))
        .collect();
    let wanted: Vec<(i32, String, Transform)> = partition_spec()
        .fields()
        .iter()
        .map(|f| (f.source_id, f.name.clone(), f.transform))
        .collect();
    if found == wanted {
        return None;
    }
    let show = |fields: &[(i32, String, Transform)]| {
        fields
            .iter()
            .map(|(source, name, transform)| {
                let column = schema
                    .field_by_id(*source)
                    .map_or_else(|| format!("field {source}"), |f| f.name.clone());
                format!("{name}={transform}({column})")
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let extra: Vec<&str> = found
        .iter()
        .filter(|f| !wanted.contains(f))
        .map(|(_, name, _)| name.as_str())
        .collect();
    let undo = match extra.as_slice() {
        [] => String::new(),
        names => format!(
            " (Spark: {})",
            names
                .iter()
                .map(|n| format!(
                    "ALTER TABLE receipt_exporter.receipts.{TABLE} DROP PARTITION FIELD {n}"
                ))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    };
    Some(format!(
        "its partition spec is [{}] where the exporter writes [{}]: set it back{undo}",
        show(&found),
        show(&wanted),
    ))
}

fn describe(f: &NestedFieldRef) -> String {
    format!(
        "field {} `{}` ({}{})",
        f.id,
        f.name,
        f.field_type,
        if f.required { ", required" } else { "" }
    )
}

fn same_fields(a: &Schema, b: &Schema) -> bool {
    let (a, b) = (a.as_struct().fields(), b.as_struct().fields());
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_field(x, y))
}

fn same_field(x: &NestedFieldRef, y: &NestedFieldRef) -> bool {
    x.id == y.id && x.name == y.name && x.required == y.required && x.field_type == y.field_type
}

/// What another engine changed, from the exporter's newest schema to `found`.
fn schema_change(own: &Schema, found: &Schema) -> String {
    let (own, found) = (own.as_struct().fields(), found.as_struct().fields());
    let mut parts = Vec::new();
    for f in found {
        match own.iter().find(|o| o.id == f.id) {
            None => parts.push(format!(
                "it adds {} (Spark: ALTER TABLE receipt_exporter.receipts.{TABLE} DROP COLUMN {})",
                describe(f),
                f.name
            )),
            Some(o) if !same_field(o, f) => parts.push(format!(
                "it has {} where the exporter writes {}",
                describe(f),
                describe(o)
            )),
            Some(_) => {}
        }
    }
    for o in own {
        if !found.iter().any(|f| f.id == o.id) {
            parts.push(format!("it lacks {}", describe(o)));
        }
    }
    if parts.is_empty() {
        parts.push("its fields are in another order".into());
    }
    format!("its schema changed: {}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use iceberg::spec::{NestedField, PrimitiveType, Type};
    use std::sync::Arc;

    #[test]
    fn the_exporters_schema_is_its_own_and_an_added_column_is_named() {
        assert!(same_fields(&table_schema(), &table_schema()));
        let mut fields: Vec<NestedFieldRef> = table_schema().as_struct().fields().to_vec();
        fields.push(Arc::new(NestedField::optional(
            8,
            "note",
            Type::Primitive(PrimitiveType::String),
        )));
        let changed = Schema::builder()
            .with_schema_id(1)
            .with_fields(fields)
            .build()
            .unwrap();
        assert!(!same_fields(&table_schema(), &changed));
        let text = schema_change(&table_schema(), &changed);
        assert!(text.contains("adds field 8 `note` (string)"), "{text}");
        assert!(text.contains("DROP COLUMN note"), "{text}");
    }

    #[test]
    fn the_first_schema_and_the_one_with_the_app_are_both_the_exporters() {
        let own = own_schemas();
        assert!(own.iter().any(|o| same_fields(o, &first_schema())));
        assert!(own.iter().any(|o| same_fields(o, &table_schema())));
        let app = table_schema();
        let field = app.field_by_id(super::super::SDKAPPID_FIELD).unwrap();
        assert_eq!((field.name.as_str(), field.required), ("sdkappid", false));
        assert_eq!(
            app.as_struct().fields().len(),
            first_schema().as_struct().fields().len() + 1
        );
    }
}
