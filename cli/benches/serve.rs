//! The training service, measured through its HTTP API with the real binary and job processes.
//! Prints markdown tables of medians and percentiles.
//!
//!     RAYON_NUM_THREADS=2 cargo bench -p trainrt-cli --bench serve
//!     TRAINRT_BENCH_ONLY=latency,overhead,api,sse,fairness   (any subset)
//!
//! - latency: submit to the job's `running` state and to its process's `started` event, bundled
//!   callbacks (precompiled, so nothing compiles).
//! - overhead: a digits job under `serve` against the same `trainrt run`, alternated.
//! - api: p50/p99 of `GET /v1/jobs/{id}` and `POST /v1/jobs` from 4 client threads while two
//!   jobs train on both cores.
//! - sse: 200 subscribers on one job's live stream: every event reaches every subscriber, and how
//!   late.
//! - fairness: 1,000 jobs queued by 10 tenants, each tenant's 100 at once, claimed through the
//!   store: which tenants the first claims serve, and claims per second.

#[path = "../../tests/all/common.rs"]
mod common;
#[path = "../../tests/all/serve_harness.rs"]
#[allow(dead_code)]
mod serve_harness;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use serve_harness::{Server, admin};

fn only(name: &str) -> bool {
    std::env::var("TRAINRT_BENCH_ONLY").map_or(true, |v| v.split(',').any(|s| s == name))
}

fn trainrt() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trainrt"))
}

/// A tenant whose queue holds whatever a benchmark queues; returns its token.
fn tenant(data: &Path, name: &str) -> String {
    admin(data, &["tenant", "create", name, "--max-queued", "100000"])
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn get(agent: &ureq::Agent, server: &Server, path: &str, token: &str) -> Value {
    agent
        .get(format!("{}{path}", server.url))
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .expect("GET")
        .body_mut()
        .read_json()
        .unwrap_or(Value::Null)
}

fn submit(agent: &ureq::Agent, server: &Server, token: &str, config: &Value) -> String {
    let mut response = agent
        .post(format!("{}/v1/jobs", server.url))
        .header("Authorization", format!("Bearer {token}"))
        .send_json(config)
        .expect("POST");
    let job: Value = response.body_mut().read_json().expect("job");
    job["id"].as_str().expect("id").to_string()
}

fn events(agent: &ureq::Agent, server: &Server, token: &str, id: &str) -> Vec<Value> {
    get(
        agent,
        server,
        &format!("/v1/jobs/{id}/events?limit=1000"),
        token,
    )["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn wait_final(agent: &ureq::Agent, server: &Server, token: &str, id: &str) -> Value {
    loop {
        let job = get(agent, server, &format!("/v1/jobs/{id}"), token);
        if matches!(
            job["state"].as_str(),
            Some("succeeded" | "stopped" | "failed" | "cancelled")
        ) {
            return job;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Reads the job's live event stream until the server ends it (after the final state).
fn follow_to_end(server: &Server, token: &str, id: &str) {
    let response = agent()
        .get(format!("{}/v1/jobs/{id}/events", server.url))
        .header("Authorization", format!("Bearer {token}"))
        .header("Accept", "text/event-stream")
        .call()
        .expect("SSE");
    for line in BufReader::new(response.into_body().into_reader()).lines() {
        if line.is_err() {
            break;
        }
    }
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}

fn callbacks() -> Value {
    json!([{"spec": "logger"}, {"spec": "early-stopping:patience=100"}, {"spec": "terminate-on-nan"}])
}

fn latency(work: &Path) {
    let data = work.join("latency");
    let server = Server::start(&data, 1);
    let token = tenant(&data, "bench");
    let agent = agent();
    let config = json!({"epochs": 1, "callbacks": callbacks()});
    let (mut running, mut started) = (Vec::new(), Vec::new());
    for _ in 0..21 {
        let t = Instant::now();
        let id = submit(&agent, &server, &token, &config);
        let (mut saw_running, mut saw_started) = (None, None);
        while saw_started.is_none() {
            for event in events(&agent, &server, &token, &id) {
                if event["kind"] == "state" && event["data"]["state"] == "running" {
                    saw_running.get_or_insert(t.elapsed());
                }
                if event["kind"] == "started" {
                    saw_started.get_or_insert(t.elapsed());
                }
            }
        }
        running.push(saw_running.unwrap_or_default().as_secs_f64() * 1e3);
        started.push(saw_started.unwrap_or_default().as_secs_f64() * 1e3);
        wait_final(&agent, &server, &token, &id);
    }
    println!("| submit to … (ms, 21 jobs) | median | p90 |");
    println!("|---|---|---|");
    for (what, samples) in [
        ("`running` (claimed)", &mut running),
        ("`started` (job process training)", &mut started),
    ] {
        println!(
            "| {what} | {:.1} | {:.1} |",
            percentile(samples, 0.5),
            percentile(samples, 0.9)
        );
    }
}

fn overhead(work: &Path) {
    let data = work.join("overhead");
    let server = Server::start(&data, 1);
    let token = tenant(&data, "bench");
    let agent = agent();
    println!(
        "| digits, 3 bundled callbacks, 1 thread | `trainrt run`, start to exit (s) | `trainrt serve`, submit to final state (s) | serve / run |"
    );
    println!("|---|---|---|---|");
    // A short job shows the fixed cost per job; a longer one what a run pays in proportion.
    for (epochs, rounds) in [(30, 7), (300, 3)] {
        let config = json!({"epochs": epochs, "callbacks": callbacks()});
        let toml_file = work.join(format!("overhead-{epochs}.toml"));
        let toml: toml::Value = serde_json::from_value(config.clone()).expect("toml");
        std::fs::write(&toml_file, toml::to_string(&toml).expect("toml")).expect("write");
        let (mut served, mut alone) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let t = Instant::now();
            let id = submit(&agent, &server, &token, &config);
            // Told by the event stream, not by polling: a poll every few milliseconds would
            // load the server on the core the job does not use, and the machine has two.
            follow_to_end(&server, &token, &id);
            served.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let out = trainrt()
                .args(["run", "--threads", "1", "--json", "--config"])
                .arg(&toml_file)
                .arg("--run-dir")
                .arg(work.join(format!("alone-{epochs}-{round}")))
                .output()
                .expect("run");
            assert!(out.status.success());
            alone.push(t.elapsed().as_secs_f64());
        }
        let (s, a) = (percentile(&mut served, 0.5), percentile(&mut alone, 0.5));
        println!(
            "| {epochs} epochs, median of {rounds} | {a:.3} | {s:.3} | {:.3} |",
            s / a
        );
    }
}

fn api(work: &Path) {
    let data = work.join("api");
    let server = Arc::new(Server::start(&data, 2));
    let token = Arc::new(tenant(&data, "bench"));
    let agent = agent();
    // Two long jobs keep both cores training.
    let long = json!({"epochs": 100000, "callbacks": [{"spec": "logger"}]});
    let busy: Vec<String> = (0..2)
        .map(|_| submit(&agent, &server, &token, &long))
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let queued = json!({"epochs": 1});
    let deadline = Instant::now() + Duration::from_secs(10);
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let (server, token, id) =
                (Arc::clone(&server), Arc::clone(&token), busy[i % 2].clone());
            let queued = queued.clone();
            std::thread::spawn(move || {
                let agent = self::agent();
                let (mut gets, mut posts) = (Vec::new(), Vec::new());
                while Instant::now() < deadline {
                    let t = Instant::now();
                    get(&agent, &server, &format!("/v1/jobs/{id}"), &token);
                    gets.push(t.elapsed().as_secs_f64() * 1e3);
                    if gets.len() % 10 == 0 {
                        let t = Instant::now();
                        submit(&agent, &server, &token, &queued);
                        posts.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                }
                (gets, posts)
            })
        })
        .collect();
    let (mut gets, mut posts) = (Vec::new(), Vec::new());
    for t in threads {
        let (g, p) = t.join().expect("client");
        gets.extend(g);
        posts.extend(p);
    }
    println!("| 4 clients, 10 s, two jobs training | requests | p50 (ms) | p99 (ms) |");
    println!("|---|---|---|---|");
    for (what, samples) in [
        ("`GET /v1/jobs/{id}`", &mut gets),
        ("`POST /v1/jobs`", &mut posts),
    ] {
        println!(
            "| {what} | {} | {:.2} | {:.2} |",
            samples.len(),
            percentile(samples, 0.5),
            percentile(samples, 0.99)
        );
    }
}

fn sse(work: &Path) {
    let data = work.join("sse");
    let server = Arc::new(Server::start(&data, 1));
    let token = Arc::new(tenant(&data, "bench"));
    let agent = agent();
    let config = json!({"epochs": 40, "callbacks": callbacks()});
    let id = Arc::new(submit(&agent, &server, &token, &config));
    let subscribers: Vec<_> = (0..200)
        .map(|_| {
            let (server, token, id) = (Arc::clone(&server), Arc::clone(&token), Arc::clone(&id));
            std::thread::spawn(move || {
                let response = self::agent()
                    .get(format!("{}/v1/jobs/{id}/events", server.url))
                    .header("Authorization", format!("Bearer {token}"))
                    .header("Accept", "text/event-stream")
                    .call()
                    .expect("SSE");
                let mut lags = Vec::new();
                let mut seqs = Vec::new();
                for line in BufReader::new(response.into_body().into_reader()).lines() {
                    let Ok(line) = line else { break };
                    if let Some(data) = line.strip_prefix("data:") {
                        let event: Value = serde_json::from_str(data.trim()).expect("event");
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .expect("clock")
                            .as_millis() as f64;
                        lags.push(now - event["at"].as_f64().unwrap_or(now));
                        seqs.push(event["seq"].as_i64().unwrap_or(0));
                    }
                }
                (seqs, lags)
            })
        })
        .collect();
    let mut lags = Vec::new();
    let mut complete = 0;
    let expected = {
        wait_final(&agent, &server, &token, &id);
        events(&agent, &server, &token, &id).len()
    };
    for s in subscribers {
        let (seqs, l) = s.join().expect("subscriber");
        complete += usize::from(seqs == (1..=expected as i64).collect::<Vec<_>>());
        lags.extend(l);
    }
    println!("| 200 SSE subscribers, one job (40 epochs, {expected} events) | value |");
    println!("|---|---|");
    println!("| subscribers that got every event, in order | {complete} |");
    println!(
        "| delivery lag p50 (ms) | {:.1} |",
        percentile(&mut lags, 0.5)
    );
    println!(
        "| delivery lag p99 (ms) | {:.1} |",
        percentile(&mut lags, 0.99)
    );
}

fn fairness(work: &Path) {
    use trainrt_service::model::{JobState, Quota};
    use trainrt_service::store::sqlite::SqliteStore;
    use trainrt_service::store::{Finish, NewJob, Store};
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let store = SqliteStore::open(&work.join("fairness.db"))
            .await
            .expect("store");
        let quota = Quota {
            max_running: 1000,
            max_queued: 1000,
            ..Quota::default()
        };
        let mut tenants = Vec::new();
        for t in 0..10 {
            tenants.push(
                store
                    .create_tenant(&format!("t{t}"), &quota)
                    .await
                    .expect("tenant"),
            );
        }
        let t = Instant::now();
        for tenant in &tenants {
            for j in 0..100 {
                let job = NewJob {
                    id: format!("{}-{j}", tenant.name),
                    config: json!({}),
                    resolved: json!({}),
                    idempotency_key: None,
                };
                store.submit(tenant, job).await.expect("submit");
            }
        }
        let submit_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut order = Vec::new();
        while let Some(claim) = store.claim("bench").await.expect("claim") {
            let done = Finish {
                state: JobState::Succeeded,
                reason: None,
                summary: None,
            };
            store
                .finish(&claim.job, claim.attempt, done)
                .await
                .expect("finish");
            order.push(claim.tenant);
        }
        let claim_s = t.elapsed().as_secs_f64();
        let first: std::collections::BTreeSet<i64> = order.iter().take(10).copied().collect();
        let last_tenant_first = order
            .iter()
            .position(|t| *t == tenants[9].id)
            .unwrap_or(usize::MAX);
        println!("| 1,000 jobs, 10 tenants queued in turn (100 each) | value |");
        println!("|---|---|");
        println!(
            "| distinct tenants among the first 10 claims | {} |",
            first.len()
        );
        println!("| claims before the last-queued tenant's first job | {last_tenant_first} |");
        println!("| submits per second | {:.0} |", 1000.0 / submit_s);
        println!(
            "| claim + finish per second | {:.0} |",
            order.len() as f64 / claim_s
        );
    });
}

fn main() {
    let work: PathBuf = tempfile::tempdir().expect("tempdir").keep();
    if only("latency") {
        latency(&work);
        println!();
    }
    if only("overhead") {
        overhead(&work);
        println!();
    }
    if only("api") {
        api(&work);
        println!();
    }
    if only("sse") {
        sse(&work);
        println!();
    }
    if only("fairness") {
        fairness(&work);
    }
    let _ = std::fs::remove_dir_all(&work);
}
