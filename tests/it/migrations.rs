use crate::helpers::TestDb;

#[tokio::test]
async fn migrations_apply_from_empty_and_then_apply_nothing() {
    let db = TestDb::empty().await;
    let first = receipt_exporter::db::migrate(&db.pool).await.unwrap();
    assert!(!first.is_empty(), "an empty database gets every migration");
    let second = receipt_exporter::db::migrate(&db.pool).await.unwrap();
    assert!(
        second.is_empty(),
        "a second migrate applies nothing, got {second:?}"
    );
    let outside: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(outside, 0, "every object lives in the schema receipts");
}
