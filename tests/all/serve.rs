//! `trainrt serve`, end to end: the real binary on 127.0.0.1:0 with a temporary data directory,
//! real HTTP, real job processes. (The store's rules are tested without HTTP in the service
//! crate's suite.)

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{WatGuest, kind, trainrt_command, weights};
use crate::serve_harness::{Server, admin};

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// One request: `(status, JSON body or Null)`.
fn call(
    server: &Server,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&[u8]>,
) -> (u16, Value) {
    let url = format!("{}{path}", server.url);
    let agent = agent();
    let auth = format!("Bearer {token}");
    let response = match (method, body) {
        ("GET", _) => agent.get(&url).header("Authorization", &auth).call(),
        ("DELETE", _) => agent.delete(&url).header("Authorization", &auth).call(),
        (_, Some(body)) => agent.post(&url).header("Authorization", &auth).send(body),
        (_, None) => agent.post(&url).header("Authorization", &auth).send_empty(),
    };
    let mut response = response.unwrap();
    let status = response.status().as_u16();
    let mut text = String::new();
    let _ = response.body_mut().as_reader().read_to_string(&mut text);
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn submit(server: &Server, token: &str, config: &Value) -> Value {
    let (status, job) = call(
        server,
        "POST",
        "/v1/jobs",
        token,
        Some(config.to_string().as_bytes()),
    );
    assert_eq!(status, 201, "{job}");
    job
}

/// Waits until the job is in a final state; returns it.
fn wait_final(server: &Server, token: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (_, job) = call(server, "GET", &format!("/v1/jobs/{id}"), token, None);
        if matches!(
            job["state"].as_str(),
            Some("succeeded" | "stopped" | "failed" | "cancelled")
        ) {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} did not end: {job}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn digits(epochs: u32, callbacks: Value) -> Value {
    json!({"epochs": epochs, "callbacks": callbacks})
}

/// The same configuration trained by `trainrt run`, uninterrupted: its final weights.
fn reference_weights(config: &Value, dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let file = dir.join("config.json");
    let mut config: trainrt::TrainConfig = serde_json::from_value(config.clone()).unwrap();
    config.name = "reference".into();
    let toml = toml_of(&config);
    std::fs::write(&file, toml).unwrap();
    let run_dir = dir.join("reference");
    let out = trainrt_command()
        .args(["run", "--threads", "1", "--json", "--config"])
        .arg(&file)
        .arg("--run-dir")
        .arg(&run_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    weights(&run_dir, "last")
}

fn toml_of(config: &trainrt::TrainConfig) -> String {
    // The run's config.json round-trips through serde; TOML takes the same fields.
    let value: toml::Value = serde_json::from_value(serde_json::to_value(config).unwrap()).unwrap();
    toml::to_string(&value).unwrap()
}

fn job_weights(server: &Server, id: &str) -> std::collections::BTreeMap<String, Vec<u8>> {
    weights(
        &server.data.join("artifacts/jobs").join(id).join("run"),
        "last",
    )
}

#[test]
fn two_tenants_side_by_side_one_hostile_one_bitwise_as_if_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, 2);
    let acme = admin(&data, &["tenant", "create", "acme", "--max-running", "2"]);
    let beta = admin(&data, &["tenant", "create", "beta", "--max-running", "2"]);

    // acme's callbacks loop forever, grow memory without end, and trap, at every epoch end:
    // each faults and is disabled.
    let mut upload = Value::Null;
    for (name, body) in [
        ("spin.wasm", "(loop $l (br $l))"),
        (
            "hog.wasm",
            "(loop $l (drop (memory.grow (i32.const 1))) (br $l))",
        ),
        ("trap.wasm", "unreachable"),
    ] {
        let guest = WatGuest::new(&[kind::EPOCH_END])
            .body("on-epoch-end", body)
            .component();
        let path = format!("/v1/callbacks?name={name}");
        let (status, answer) = call(&server, "POST", &path, &acme, Some(&guest));
        assert_eq!(status, 201, "{answer}");
        if name == "spin.wasm" {
            upload = answer;
        }
    }
    let hostile_callbacks = json!([
        {"spec": "spin.wasm", "on_fault": "disable"},
        {"spec": "hog.wasm", "on_fault": "disable"},
        {"spec": "trap.wasm", "on_fault": "disable"},
        {"spec": "logger"}]);
    let hostile_job = submit(&server, &acme, &digits(4, hostile_callbacks));
    let config = digits(
        6,
        json!([{"spec": "early-stopping:patience=2"}, {"spec": "logger"}]),
    );
    let good_job = submit(&server, &beta, &config);

    let hostile_end = wait_final(&server, &acme, hostile_job["id"].as_str().unwrap());
    assert_eq!(hostile_end["state"], "succeeded", "{hostile_end}");
    let (_, faults) = call(
        &server,
        "GET",
        &format!("/v1/jobs/{}/faults", hostile_job["id"].as_str().unwrap()),
        &acme,
        None,
    );
    let mut kinds: Vec<&str> = faults
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    kinds.sort_unstable();
    assert!(
        matches!(
            kinds[..],
            ["memory-limit", "out-of-fuel" | "timeout", "trap"]
        ),
        "{faults}"
    );
    // The run names callbacks as the tenant named them, and shows no server path.
    assert_eq!(
        faults[0]["callback"].as_str().map(|c| c.len() < 10),
        Some(true),
        "{faults}"
    );
    let hostile_id = hostile_job["id"].as_str().unwrap();
    let (_, job) = call(
        &server,
        "GET",
        &format!("/v1/jobs/{hostile_id}"),
        &acme,
        None,
    );
    let summary = job["summary"].to_string();
    assert!(
        !summary.contains(&server.data.display().to_string()),
        "{summary}"
    );
    let good_id = good_job["id"].as_str().unwrap();
    let good_end = wait_final(&server, &beta, good_id);
    assert!(
        matches!(good_end["state"].as_str(), Some("succeeded" | "stopped")),
        "{good_end}"
    );
    assert_eq!(
        job_weights(&server, good_id),
        reference_weights(&config, dir.path())
    );

    // Another tenant's resources are not found, whatever the endpoint.
    let other = hostile_job["id"].as_str().unwrap();
    for path in [
        "",
        "/events",
        "/metrics",
        "/decisions",
        "/faults",
        "/logs",
        "/checkpoints",
        "/checkpoints/last",
    ] {
        let (status, body) = call(
            &server,
            "GET",
            &format!("/v1/jobs/{other}{path}"),
            &beta,
            None,
        );
        assert_eq!(status, 404, "GET {path}: {body}");
        assert_eq!(body["error"]["code"], "not_found");
    }
    assert_eq!(
        call(
            &server,
            "POST",
            &format!("/v1/jobs/{other}/cancel"),
            &beta,
            None
        )
        .0,
        404
    );
    // Naming acme's upload (by name or hash) is as if it did not exist.
    let sha = upload["sha256"].as_str().unwrap();
    for spec in ["spin.wasm".to_string(), format!("sha256:{sha}.wasm")] {
        let (status, body) = call(
            &server,
            "POST",
            "/v1/jobs",
            &beta,
            Some(digits(1, json!([{"spec": spec}])).to_string().as_bytes()),
        );
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (422, Some("unknown_upload")),
            "{body}"
        );
    }
    let (_, jobs) = call(&server, "GET", "/v1/jobs", &beta, None);
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 1);
}

#[test]
fn bad_requests_get_their_4xx() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, 0);
    let token = admin(&data, &["tenant", "create", "acme"]);
    let revoked = {
        let out = trainrt_command()
            .args(["admin", "token", "create", "acme", "--data-dir"])
            .arg(&data)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let secret = text.split_whitespace().last().unwrap().to_string();
        let id = text.split_whitespace().nth(1).unwrap().to_string();
        admin(&data, &["token", "revoke", &id]);
        secret
    };
    let huge = vec![b' '; 2 << 20];
    // (what, method, path, body, status, error code)
    type Case<'a> = (&'a str, &'a str, &'a str, Option<Vec<u8>>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("no token", "GET", "/v1/jobs", None, 401, "unauthenticated"),
        (
            "wrong token",
            "GET",
            "/v1/jobs",
            None,
            401,
            "unauthenticated",
        ),
        (
            "revoked token",
            "GET",
            "/v1/jobs",
            None,
            401,
            "unauthenticated",
        ),
        (
            "malformed JSON",
            "POST",
            "/v1/jobs",
            Some(b"{epochs: 3".to_vec()),
            400,
            "bad_json",
        ),
        (
            "unknown field",
            "POST",
            "/v1/jobs",
            Some(br#"{"epochz": 3}"#.to_vec()),
            422,
            "invalid_config",
        ),
        (
            "invalid value",
            "POST",
            "/v1/jobs",
            Some(br#"{"epochs": 0}"#.to_vec()),
            422,
            "invalid_config",
        ),
        (
            "server path",
            "POST",
            "/v1/jobs",
            Some(br#"{"data": "csv:/etc/passwd"}"#.to_vec()),
            422,
            "invalid_config",
        ),
        (
            "dot-dot path",
            "POST",
            "/v1/jobs",
            Some(br#"{"data": "csv:../../trainrt.db"}"#.to_vec()),
            422,
            "invalid_config",
        ),
        (
            "callback path",
            "POST",
            "/v1/jobs",
            Some(br#"{"callbacks": [{"spec": "/tmp/x.wasm"}]}"#.to_vec()),
            422,
            "invalid_config",
        ),
        (
            "GPU",
            "POST",
            "/v1/jobs",
            Some(br#"{"device": "cuda"}"#.to_vec()),
            422,
            "invalid_config",
        ),
        (
            "oversized body",
            "POST",
            "/v1/jobs",
            Some(huge),
            413,
            "body_too_large",
        ),
        (
            "junk upload",
            "POST",
            "/v1/callbacks?name=x.wasm",
            Some(b"not wasm".to_vec()),
            422,
            "invalid_component",
        ),
        (
            "core module without the world",
            "POST",
            "/v1/callbacks?name=m.wasm",
            Some(wat::parse_str("(module)").unwrap()),
            422,
            "invalid_component",
        ),
        (
            "upload name with a path",
            "POST",
            "/v1/callbacks?name=../x.wasm",
            Some(b"x".to_vec()),
            400,
            "bad_request",
        ),
        (
            "unknown job",
            "GET",
            "/v1/jobs/job_0000",
            None,
            404,
            "not_found",
        ),
        (
            "bad state filter",
            "GET",
            "/v1/jobs?state=done",
            None,
            400,
            "bad_request",
        ),
        (
            "tenant on admin",
            "GET",
            "/v1/admin/tenants",
            None,
            404,
            "not_found",
        ),
        (
            "unknown endpoint",
            "GET",
            "/v1/nope",
            None,
            404,
            "not_found",
        ),
    ];
    for (what, method, path, body, status, code) in cases {
        let token = match what {
            "no token" => "",
            "wrong token" => "trt_0000",
            "revoked token" => revoked.as_str(),
            _ => token.as_str(),
        };
        let (got, answer) = call(&server, method, path, token, body.as_deref());
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{what}: {answer}"
        );
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    }
}

#[test]
fn cancel_idempotent_submit_and_event_stream_resume() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, 1);
    let token = admin(&data, &["tenant", "create", "acme"]);
    let config = digits(400, json!([{"spec": "logger"}])).to_string();
    let post = |key: &str| {
        let response = agent()
            .post(format!("{}/v1/jobs", server.url))
            .header("Authorization", format!("Bearer {token}"))
            .header("Idempotency-Key", key)
            .send(config.as_bytes())
            .unwrap();
        let status = response.status().as_u16();
        let job: Value = response.into_body().read_json().unwrap();
        (status, job)
    };
    let (first, job) = post("k1");
    let (again, same) = post("k1");
    assert_eq!((first, again), (201, 200));
    assert_eq!(job["id"], same["id"]);
    let id = job["id"].as_str().unwrap().to_string();

    // Read the live stream until three epochs went by, then drop the connection.
    let mut seen = Vec::new();
    let stream = |after: i64, seen: &mut Vec<Value>, stop_after_epochs: Option<usize>| {
        let response = agent()
            .get(format!("{}/v1/jobs/{id}/events", server.url))
            .header("Authorization", format!("Bearer {token}"))
            .header("Accept", "text/event-stream")
            .header("Last-Event-ID", after.to_string())
            .call()
            .unwrap();
        let mut epochs = 0;
        for line in BufReader::new(response.into_body().into_reader()).lines() {
            let line = line.unwrap();
            if let Some(data) = line.strip_prefix("data:") {
                let event: Value = serde_json::from_str(data.trim()).unwrap();
                epochs += usize::from(event["kind"] == "epoch");
                seen.push(event);
                if stop_after_epochs.is_some_and(|n| epochs >= n) {
                    return;
                }
            }
        }
    };
    stream(0, &mut seen, Some(3));
    let (status, _) = call(
        &server,
        "POST",
        &format!("/v1/jobs/{id}/cancel"),
        &token,
        None,
    );
    assert_eq!(status, 202);
    let last = seen.last().unwrap()["seq"].as_i64().unwrap();
    stream(last, &mut seen, None); // resumes, and ends with the final state
    let job = wait_final(&server, &token, &id);
    assert_eq!(job["state"], "cancelled", "{job}");
    assert!(job["summary"]["epochs_completed"].as_u64().unwrap() < 400);
    let seqs: Vec<i64> = seen.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "no gap, no duplicate"
    );
    // The JSON pages tell the same story.
    let (_, page) = call(
        &server,
        "GET",
        &format!("/v1/jobs/{id}/events?limit=1000"),
        &token,
        None,
    );
    assert_eq!(page["events"].as_array().unwrap(), &seen);
    assert_eq!(seen.last().unwrap()["data"]["state"], "cancelled");
    // The cancelled run wrote its last checkpoint, and it downloads.
    let (status, list) = call(
        &server,
        "GET",
        &format!("/v1/jobs/{id}/checkpoints"),
        &token,
        None,
    );
    assert_eq!(
        (status, list[0]["tag"].as_str()),
        (200, Some("last")),
        "{list}"
    );
}

#[test]
fn a_server_killed_mid_run_resumes_the_job_bitwise() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data, 1);
    let token = admin(&data, &["tenant", "create", "acme"]);
    let config = digits(
        40,
        json!([{"spec": "reduce-lr-on-plateau:patience=1"}, {"spec": "logger"}]),
    );
    let id = submit(&server, &token, &config)["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Wait for a few epochs, then kill -9 the server (its job process dies with it).
    wait_for_epochs(&server, &token, &id, 3);
    server.kill9();
    let server = Server::start(&data, 1);
    let job = wait_final(&server, &token, &id);
    assert!(
        matches!(job["state"].as_str(), Some("succeeded" | "stopped")),
        "{job}"
    );
    assert_eq!(job["attempts"], 2, "{job}");
    assert_eq!(
        job_weights(&server, &id),
        reference_weights(&config, dir.path())
    );
    let (_, page) = call(
        &server,
        "GET",
        &format!("/v1/jobs/{id}/events?limit=1000"),
        &token,
        None,
    );
    let seqs: Vec<i64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
}

#[test]
fn running_quota_holds_and_tenants_take_turns() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, 2);
    let greedy = admin(&data, &["tenant", "create", "greedy", "--max-running", "1"]);
    let modest = admin(&data, &["tenant", "create", "modest"]);
    let operator = admin(&data, &["token", "create", "--operator"]);
    let jobs: Vec<String> = (0..4)
        .map(|_| {
            submit(&server, &greedy, &digits(2, json!([])))["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let late = submit(&server, &modest, &digits(2, json!([])))["id"]
        .as_str()
        .unwrap()
        .to_string();
    for id in &jobs {
        wait_final(&server, &greedy, id);
    }
    wait_final(&server, &modest, &late);
    let (_, attempts) = call(&server, "GET", "/v1/admin/attempts", &operator, None);
    let attempts = attempts.as_array().unwrap();
    // From the server's own history: greedy never ran two at once.
    let greedy_runs: Vec<(i64, i64)> = attempts
        .iter()
        .filter(|a| a["tenant"] == "greedy")
        .map(|a| {
            (
                a["started_at"].as_i64().unwrap(),
                a["ended_at"].as_i64().unwrap(),
            )
        })
        .collect();
    for (i, a) in greedy_runs.iter().enumerate() {
        for b in &greedy_runs[i + 1..] {
            assert!(a.1 <= b.0 || b.1 <= a.0, "overlap {a:?} {b:?}");
        }
    }
    // modest's one job, queued behind four of greedy's, waited for one slot at most.
    let start = |id: &str| {
        attempts.iter().find(|a| a["job"] == id).unwrap()["started_at"]
            .as_i64()
            .unwrap()
    };
    assert!(start(&late) <= start(&jobs[2]), "{attempts:?}");
    // Every documented route is served (none answers the fallback's "no such endpoint").
    let (_, doc) = call(&server, "GET", "/v1/openapi.json", "", None);
    let paths = doc["paths"].as_object().unwrap();
    for expected in [
        "/v1/jobs",
        "/v1/jobs/{id}",
        "/v1/jobs/{id}/cancel",
        "/v1/jobs/{id}/events",
        "/v1/callbacks",
        "/v1/datasets",
        "/v1/quota",
        "/v1/admin/tenants",
        "/v1/admin/attempts",
    ] {
        assert!(
            paths.contains_key(expected),
            "{expected} missing from the OpenAPI document"
        );
    }
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys().filter(|m| *m == "get") {
            let concrete = path
                .replace("{id}", &late)
                .replace("{tag}", "last")
                .replace("{name}", "modest");
            let (_, body) = call(&server, &method.to_uppercase(), &concrete, &operator, None);
            assert_ne!(
                body["error"]["message"], "no such endpoint; see /v1/openapi.json",
                "{path}"
            );
        }
    }
}

#[test]
fn a_terminated_server_suspends_its_jobs_and_the_next_one_finishes_them_bitwise() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data, 1);
    let token = admin(&data, &["tenant", "create", "acme"]);
    let config = digits(
        60,
        json!([{"spec": "early-stopping:patience=1000"}, {"spec": "logger"}]),
    );
    let id = submit(&server, &token, &config)["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for_epochs(&server, &token, &id, 3);
    let pid = server.child.id().to_string();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    assert!(term.unwrap().success());
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status}");
    drop(server);
    let server = Server::start(&data, 1);
    let job = wait_final(&server, &token, &id);
    let ended = (job["state"].as_str(), job["attempts"].as_u64());
    assert_eq!(ended, (Some("succeeded"), Some(2)), "{job}");
    let (_, page) = call(
        &server,
        "GET",
        &format!("/v1/jobs/{id}/events?limit=1000"),
        &token,
        None,
    );
    let requeued = page["events"].as_array().unwrap().iter().find(|e| {
        e["kind"] == "state" && e["data"]["state"] == "queued" && e["data"]["attempt"] == 1
    });
    let reason = requeued.unwrap()["data"]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("shut down"), "{reason}");
    assert_eq!(
        job_weights(&server, &id),
        reference_weights(&config, dir.path())
    );
}

fn wait_for_epochs(server: &Server, token: &str, id: &str, epochs: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let path = format!("/v1/jobs/{id}/events?limit=1000");
        let (_, page) = call(server, "GET", &path, token, None);
        let events = page["events"].as_array().unwrap();
        if events.iter().filter(|e| e["kind"] == "epoch").count() >= epochs {
            return;
        }
        assert!(Instant::now() < deadline, "no epochs: {page}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn quotas_end_jobs_with_the_reason_and_refuse_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, 2);
    let disk = admin(
        &data,
        &["tenant", "create", "disk", "--storage-bytes", "100000"],
    );
    let cpu = admin(&data, &["tenant", "create", "cpu", "--cpu-seconds", "0.5"]);
    let ceilings = json!({"sandbox": {"fuel_per_call": 1_000_000}, "fuel": 1}).to_string();
    let fuel = admin(&data, &["tenant", "create", "fuel", "--quota", &ceilings]);
    let one_epoch = digits(1, json!([])).to_string();

    let long = digits(100_000, json!([]));
    let on_disk = submit(&server, &disk, &long)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let on_cpu = submit(&server, &cpu, &long)["id"]
        .as_str()
        .unwrap()
        .to_string();
    for (token, id, why) in [
        (&disk, &on_disk, "storage quota"),
        (&cpu, &on_cpu, "CPU-seconds quota"),
    ] {
        let job = wait_final(&server, token, id);
        assert_eq!(job["state"], "failed", "{job}");
        assert!(job["reason"].as_str().unwrap().contains(why), "{job}");
        let (status, body) = call(
            &server,
            "POST",
            "/v1/jobs",
            token,
            Some(one_epoch.as_bytes()),
        );
        let answer = (status, body["error"]["code"].as_str());
        assert_eq!(answer, (403, Some("quota_exhausted")), "{body}");
    }

    // Sandbox ceilings: asking above one is refused; a default is lowered to it.
    let above = digits(
        2,
        json!([{"spec": "logger", "limits": {"fuel_per_call": 2_000_000}}]),
    );
    let (status, body) = call(
        &server,
        "POST",
        "/v1/jobs",
        &fuel,
        Some(above.to_string().as_bytes()),
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("fuel_per_call"),
        "{body}"
    );
    let job = submit(&server, &fuel, &digits(2, json!([{"spec": "logger"}])));
    let id = job["id"].as_str().unwrap().to_string();
    assert_eq!(wait_final(&server, &fuel, &id)["state"], "succeeded");
    let plan = server
        .data
        .join("artifacts/jobs")
        .join(&id)
        .join("plan.json");
    let plan: Value = serde_json::from_slice(&std::fs::read(plan).unwrap()).unwrap();
    assert_eq!(
        plan["config"]["callbacks"][0]["limits"]["fuel_per_call"],
        1_000_000
    );
    // Its callback burned more than the tenant's one unit of fuel: no more jobs.
    let (_, quota) = call(&server, "GET", "/v1/quota", &fuel, None);
    assert!(quota["usage"]["fuel"].as_u64().unwrap() > 1, "{quota}");
    assert!(
        quota["usage"]["cpu_seconds"].as_f64().unwrap() > 0.0,
        "{quota}"
    );
    let (status, body) = call(
        &server,
        "POST",
        "/v1/jobs",
        &fuel,
        Some(one_epoch.as_bytes()),
    );
    let answer = (status, body["error"]["code"].as_str());
    assert_eq!(answer, (403, Some("quota_exhausted")), "{body}");
}

#[test]
fn requests_over_the_rate_get_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with(&data, 0, &["--rate-limit", "1"]);
    let url = server.url.clone();
    let token = admin(&data, &["tenant", "create", "acme"]);
    let mut limited = None;
    for _ in 0..10 {
        let response = agent()
            .get(format!("{url}/v1/jobs"))
            .header("Authorization", format!("Bearer {token}"))
            .call()
            .unwrap();
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
    }
    drop(server);
    let mut response = limited.expect("a burst of 10 at 1 request a second is limited");
    let retry = response
        .headers()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap();
    assert!((1..=5).contains(&retry.parse::<u64>().unwrap()), "{retry}");
    let body: Value = response.body_mut().read_json().unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
}

#[test]
fn the_remote_cli_uploads_submits_follows_and_downloads() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, 1);
    let token = admin(&data, &["tenant", "create", "acme"]);
    let remote = |args: &[&str]| {
        let out = trainrt_command()
            .arg("remote")
            .args(args)
            .env("TRAINRT_SERVER", &server.url)
            .env("TRAINRT_TOKEN", &token)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !stdout.contains(&token) && !stderr.contains(&token),
            "the token is never printed"
        );
        (out.status.code(), stdout, stderr)
    };
    // A callback of the user's own, uploaded by submit because it is a local file.
    let stop = WatGuest::new(&[kind::EPOCH_END]).write(dir.path(), "stop_now");
    let (code, out, err) = remote(&[
        "submit",
        "--json",
        "--epochs",
        "3",
        "--callback",
        "logger",
        "--callback",
        stop.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    let job: Value = serde_json::from_str(out.trim()).unwrap();
    let id = job["id"].as_str().unwrap();
    let (code, out, err) = remote(&["logs", id, "--follow", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        events.iter().filter(|e| e["kind"] == "epoch").count(),
        3,
        "{out}"
    );
    assert_eq!(
        events.last().unwrap()["data"]["state"],
        "succeeded",
        "{out}"
    );
    let (_, uploads, _) = remote(&["callbacks", "list", "--json"]);
    assert!(uploads.contains("\"stop_now.wasm\""), "{uploads}");
    let (code, _, err) = remote(&[
        "download",
        id,
        "--checkpoint",
        "last",
        "-o",
        "last.safetensors",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(trainrt::checkpoint::load(&dir.path().join("last.safetensors")).is_ok());
    // Another tenant's job, or none: the server's message, exit 2.
    let (code, _, err) = remote(&["status", "job_0000000000000000"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("404") && err.contains("no such job"), "{err}");
}
