//! The store's behaviour, as every backend must keep it: driven through the [`Store`] trait
//! only, so each backend runs the same suite (see the `tests` of each backend).

use serde_json::json;

use super::{AttemptUsage, Finish, NewJob, Store, StoreError};
use crate::model::{JobState, Principal, Quota, Tenant};

fn job(id: &str, key: Option<&str>) -> NewJob {
    NewJob {
        id: id.into(),
        config: json!({"epochs": 1}),
        resolved: json!({"epochs": 1}),
        idempotency_key: key.map(str::to_string),
    }
}

async fn tenant(store: &dyn Store, name: &str, max_running: u32) -> Tenant {
    let quota = Quota {
        max_running,
        max_queued: 5,
        ..Quota::default()
    };
    store.create_tenant(name, &quota).await.unwrap()
}

/// Tenants see their own jobs only; another tenant's is not found, the operator sees all.
pub async fn jobs_are_scoped_by_tenant(store: &dyn Store) {
    let (a, b) = (tenant(store, "a", 1).await, tenant(store, "b", 1).await);
    store.submit(&a, job("job_a", None)).await.unwrap();
    let (as_a, as_b) = (Principal::Tenant(a.id), Principal::Tenant(b.id));
    assert!(store.job(&as_a, "job_a").await.unwrap().is_some());
    assert!(store.job(&as_b, "job_a").await.unwrap().is_none());
    assert!(store.events(&as_b, "job_a", 0, 10).await.unwrap().is_none());
    assert!(store.cancel(&as_b, "job_a").await.unwrap().is_none());
    assert_eq!(
        store.jobs(&as_b, None, None, 10).await.unwrap().jobs.len(),
        0
    );
    assert_eq!(
        store
            .jobs(&Principal::Operator, None, None, 10)
            .await
            .unwrap()
            .jobs
            .len(),
        1
    );
    assert!(matches!(
        store.create_tenant("a", &Quota::default()).await,
        Err(StoreError::Exists(_))
    ));
}

/// A key submits once; the queue quota holds.
pub async fn submits_are_idempotent_and_queues_bounded(store: &dyn Store) {
    let a = tenant(store, "a", 1).await;
    let (first, created) = store.submit(&a, job("job_1", Some("k"))).await.unwrap();
    assert!(created);
    let (again, created) = store.submit(&a, job("job_2", Some("k"))).await.unwrap();
    assert!(!created);
    assert_eq!(again.id, first.id);
    for i in 2..=5 {
        store
            .submit(&a, job(&format!("job_{i}"), None))
            .await
            .unwrap();
    }
    assert!(matches!(
        store.submit(&a, job("job_6", None)).await,
        Err(StoreError::QueueFull { queued: 5 })
    ));
}

/// Claims take turns across tenants, keep each within its running quota, and a finished or
/// requeued attempt can write nothing more.
pub async fn claims_are_fair_quota_bound_and_fenced(store: &dyn Store) {
    let (a, b) = (tenant(store, "a", 1).await, tenant(store, "b", 2).await);
    for i in 0..3 {
        store.submit(&a, job(&format!("a{i}"), None)).await.unwrap();
    }
    store.submit(&b, job("b0", None)).await.unwrap();
    store.submit(&b, job("b1", None)).await.unwrap();
    let first = store.claim("w").await.unwrap().unwrap();
    let second = store.claim("w").await.unwrap().unwrap();
    assert_eq!((first.job.as_str(), second.job.as_str()), ("a0", "b0"));
    // a is at its quota of one running job: b goes on.
    assert_eq!(store.claim("w").await.unwrap().unwrap().job, "b1");
    assert!(store.claim("w").await.unwrap().is_none());
    let usage = AttemptUsage {
        cpu_seconds: 1.5,
        fuel: 10,
        storage_bytes: 100,
    };
    store.charge("a0", 1, usage).await.unwrap();
    store.charge("a0", 1, usage).await.unwrap(); // absolute: charging twice changes nothing
    store
        .append_events("a0", 1, &[("epoch".into(), json!({"epoch": 0}))])
        .await
        .unwrap();
    let done = Finish {
        state: JobState::Succeeded,
        reason: None,
        summary: Some(json!({"outcome": "completed"})),
    };
    store.finish("a0", 1, done.clone()).await.unwrap();
    assert!(matches!(
        store.finish("a0", 1, done).await,
        Err(StoreError::Fenced { .. })
    ));
    assert!(matches!(
        store
            .append_events("a0", 1, &[("log".into(), json!({}))])
            .await,
        Err(StoreError::Fenced { .. })
    ));
    let usage = store.usage(a.id).await.unwrap();
    assert_eq!(
        (usage.cpu_seconds, usage.fuel, usage.storage_bytes),
        (1.5, 10, 100)
    );
    // Events: queued, running, epoch, succeeded; numbered from 1 without gaps.
    let events = store
        .events(&Principal::Tenant(a.id), "a0", 0, 100)
        .await
        .unwrap()
        .unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert_eq!(kinds, ["state", "state", "epoch", "state"]);
    // A restart puts the running jobs back; their next claim resumes as attempt 2.
    let lost = store.requeue_lost("w", "restarted").await.unwrap();
    assert_eq!(lost.len(), 2);
    assert!(matches!(
        store
            .append_events("b0", 1, &[("log".into(), json!({}))])
            .await,
        Err(StoreError::Fenced { .. })
    ));
    let next = store.claim("w2").await.unwrap().unwrap();
    assert_eq!(next.job, "a1", "a was served longest ago");
    let again = store.claim("w2").await.unwrap().unwrap();
    assert_eq!(
        (again.job.as_str(), again.attempt, again.resume),
        ("b0", 2, true)
    );
    assert_eq!(store.attempts(Some(b.id)).await.unwrap().len(), 3);
}

/// Cancelling a queued job ends it at once; a running one is flagged for its process.
pub async fn cancel_ends_queued_and_flags_running(store: &dyn Store) {
    let a = tenant(store, "a", 1).await;
    let who = Principal::Tenant(a.id);
    store.submit(&a, job("run", None)).await.unwrap();
    store.submit(&a, job("wait", None)).await.unwrap();
    store.claim("w").await.unwrap().unwrap();
    let waiting = store.cancel(&who, "wait").await.unwrap().unwrap();
    assert_eq!(waiting.state, JobState::Cancelled);
    let running = store.cancel(&who, "run").await.unwrap().unwrap();
    assert_eq!(running.state, JobState::Running);
    assert!(running.cancel_requested && store.cancel_requested("run").await.unwrap());
}

/// Tokens are found by hash until revoked.
pub async fn tokens_resolve_until_revoked(store: &dyn Store) {
    let a = tenant(store, "a", 1).await;
    store.add_token("tok_1", "hash1", Some(a.id)).await.unwrap();
    store.add_token("tok_2", "hash2", None).await.unwrap();
    assert_eq!(
        store.principal("hash1").await.unwrap(),
        Some(Principal::Tenant(a.id))
    );
    assert_eq!(
        store.principal("hash2").await.unwrap(),
        Some(Principal::Operator)
    );
    assert!(store.revoke_token("tok_1").await.unwrap());
    assert!(!store.revoke_token("tok_1").await.unwrap());
    assert_eq!(store.principal("hash1").await.unwrap(), None);
}
