//! The PostgreSQL backend against the shared suite, and what only it must show (concurrent
//! claimers, concurrent migrations).
use super::PgStore;
use crate::store::suite;

/// A fresh database on the test server (`TRAINRT_TEST_POSTGRES`, default the local one);
/// dropped when the test ends. Never skipped: no server is a failure that says how to start one.
pub struct FreshDatabase {
    admin: String,
    name: String,
    pub url: String,
}

impl FreshDatabase {
    pub async fn create() -> Self {
        let admin = std::env::var("TRAINRT_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = format!(
            "trainrt_test_{}",
            crate::auth::hex(&rand::random::<[u8; 8]>())
        );
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
            .await
            .unwrap_or_else(|e| {
                panic!("PostgreSQL at {admin}: {e} (start it, or set TRAINRT_TEST_POSTGRES)")
            });
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let url = match admin.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("TRAINRT_TEST_POSTGRES must end in /DATABASE"),
        };
        Self { admin, name, url }
    }

    pub async fn drop_it(self) {
        if let Ok(mut conn) = <sqlx::PgConnection as sqlx::Connection>::connect(&self.admin).await {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut conn)
            .await;
        }
    }
}

macro_rules! shared_suite {
    ($($name:ident),*) => {$(
        #[tokio::test]
        async fn $name() {
            let db = FreshDatabase::create().await;
            let store = PgStore::connect(&db.url).await.unwrap();
            suite::$name(&store).await;
            store.pool.close().await;
            db.drop_it().await;
        }
    )*};
}

shared_suite!(
    jobs_are_scoped_by_tenant,
    submits_are_idempotent_and_queues_bounded,
    claims_are_fair_quota_bound_and_fenced,
    cancel_ends_queued_and_flags_running,
    tokens_resolve_until_revoked
);

#[tokio::test]
async fn migrations_apply_once_from_empty_and_again_change_nothing() {
    let db = FreshDatabase::create().await;
    let (a, b) = tokio::join!(PgStore::connect(&db.url), PgStore::connect(&db.url));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        a.schema_version().await.unwrap(),
        crate::store::schema::latest()
    );
    assert_eq!(
        b.schema_version().await.unwrap(),
        crate::store::schema::latest()
    );
    a.pool.close().await;
    b.pool.close().await;
    db.drop_it().await;
}

/// Many claimers at once never put a tenant over its running quota.
#[tokio::test]
async fn concurrent_claims_keep_the_running_quota() {
    use crate::model::{Principal, Quota};
    use crate::store::{NewJob, Store};
    let db = FreshDatabase::create().await;
    let store = std::sync::Arc::new(PgStore::connect(&db.url).await.unwrap());
    let quota = Quota {
        max_running: 2,
        max_queued: 100,
        ..Quota::default()
    };
    let tenant = store.create_tenant("a", &quota).await.unwrap();
    for i in 0..20 {
        let job = NewJob {
            id: format!("j{i}"),
            config: serde_json::json!({}),
            resolved: serde_json::json!({}),
            idempotency_key: None,
        };
        store.submit(&tenant, job).await.unwrap();
    }
    let claims = (0..8).map(|w| {
        let store = std::sync::Arc::clone(&store);
        tokio::spawn(async move { store.claim(&format!("w{w}")).await.unwrap() })
    });
    let mut claimed = 0;
    for claim in claims {
        claimed += usize::from(claim.await.unwrap().is_some());
    }
    assert_eq!(claimed, 2);
    let page = store
        .jobs(
            &Principal::Operator,
            Some(crate::model::JobState::Running),
            None,
            50,
        )
        .await
        .unwrap();
    assert_eq!(page.jobs.len(), 2);
    store.pool.close().await;
    db.drop_it().await;
}
