//! Checkpoints and resume: a resumed run continues exactly, callback state included.

use crate::common::{Tmpfs, jsonl, quick_config, sandbox, train, weights};
use trainrt::trainer::RunOutcome;
use trainrt::trainer::{Quiet, RunRequest, TrainError};

fn resume(
    config: trainrt::TrainConfig,
    dir: &std::path::Path,
) -> Result<trainrt::RunSummary, TrainError> {
    trainrt::train(
        sandbox(),
        RunRequest {
            config,
            run_dir: dir.to_path_buf(),
            resume: true,
        },
        &mut Quiet,
    )
}

/// early-stopping whose monitor never improves after the first epoch, so its `wait` counter
/// (logged as a custom metric) counts epochs: state that must survive a resume.
fn config_with_state(epochs: u32) -> trainrt::TrainConfig {
    let mut c = quick_config(epochs);
    c.push_callback("early-stopping:monitor=val_loss,min_delta=100,patience=1000")
        .unwrap();
    c
}

#[test]
fn resume_gives_bitwise_identical_weights_and_restores_callback_state() {
    let whole = tempfile::tempdir().unwrap();
    let split = tempfile::tempdir().unwrap();
    train(config_with_state(6), whole.path());

    train(config_with_state(3), split.path());
    let resumed = resume(config_with_state(6), split.path()).unwrap();
    assert_eq!(resumed.outcome, RunOutcome::Completed);
    assert_eq!(resumed.epochs_completed, 6);

    assert_eq!(weights(whole.path(), "last"), weights(split.path(), "last"));
    let wait = |dir: &std::path::Path| -> Vec<f64> {
        jsonl(dir, "metrics.jsonl")
            .iter()
            .map(|m| m["early_stopping_wait"].as_f64().expect("wait metric"))
            .collect()
    };
    let expected = wait(whole.path());
    assert_eq!(expected, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    assert_eq!(
        wait(split.path()),
        expected,
        "the wait counter continued across the resume"
    );
    let metrics = jsonl(split.path(), "metrics.jsonl");
    assert_eq!(
        metrics
            .iter()
            .map(|m| m["epoch"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4, 5]
    );
}

#[test]
fn checkpoints_hold_callback_state_and_leave_no_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    train(config_with_state(2), dir.path());
    let ckpt = trainrt::checkpoint::load(&dir.path().join("checkpoints/last.safetensors")).unwrap();
    assert_eq!(ckpt.meta.epoch, 2);
    assert_eq!(ckpt.meta.callback_states.len(), 1);
    assert_eq!(ckpt.meta.callback_states[0].name, "early-stopping");
    assert!(!ckpt.meta.callback_states[0].state.is_empty());
    for entry in walk(dir.path()) {
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!name.contains(".tmp"), "leftover temp file {name}");
    }
}

#[test]
fn one_state_saved_under_two_tags_is_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = quick_config(3);
    // A checkpoint every epoch; the last epoch's (`epoch-0002`) holds the state the run ends
    // with, as `last` does: the tag is the file's name, not part of its bytes, so the writer can
    // store such a pair once (an epoch's `best` and `last`, say).
    config
        .push_callback("model-checkpoint:save_best_only=false")
        .unwrap();
    train(config, dir.path());
    let read = |tag: &str| std::fs::read(dir.path().join(format!("checkpoints/{tag}.safetensors")));
    let (saved, last) = (read("epoch-0002").unwrap(), read("last").unwrap());
    assert!(saved == last, "epoch-0002 and last differ");
    let loaded =
        trainrt::checkpoint::load(&dir.path().join("checkpoints/epoch-0002.safetensors")).unwrap();
    assert_eq!((loaded.tag.as_str(), loaded.meta.epoch), ("epoch-0002", 3));
    assert!(
        read("epoch-0001").unwrap() != last,
        "an earlier epoch's state"
    );
}

#[test]
fn a_callback_that_heard_nothing_since_the_last_checkpoint_is_not_asked_for_its_state_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_with_state(4);
    // Subscribed to `fault` only: in a healthy run it hears nothing after `init`.
    config.push_callback("terminate-on-nan").unwrap();
    let summary = train(config, dir.path());
    let calls = |name: &str| {
        summary
            .callbacks
            .iter()
            .find(|c| c.name == name)
            .unwrap()
            .stats
            .calls
    };
    // `init`, `train-start` (the Rust SDK always takes it, for the metric names) and the first
    // epoch's snapshot; the three later `last` checkpoints reuse that snapshot.
    assert_eq!(calls("terminate-on-nan"), 3);
    // early-stopping hears train-start and every epoch-end, so every checkpoint asks it anew:
    // init + train-start + 4 epoch-ends + 4 snapshots.
    assert_eq!(calls("early-stopping"), 10);
    // And the reused state is in every checkpoint all the same.
    let ckpt = trainrt::checkpoint::load(&dir.path().join("checkpoints/last.safetensors")).unwrap();
    let names: Vec<&str> = ckpt
        .meta
        .callback_states
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["early-stopping", "terminate-on-nan"]);
}

#[test]
fn resume_of_something_that_is_not_a_run_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = trainrt::trainer::load_run_config(dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("config.json") && err.contains("is this a trainrt run directory"),
        "{err}"
    );
    std::fs::write(
        dir.path().join("config.json"),
        serde_json::to_vec(&quick_config(2)).unwrap(),
    )
    .unwrap();
    let err = resume(quick_config(2), dir.path()).unwrap_err().to_string();
    assert!(err.contains("no checkpoints/last.safetensors"), "{err}");
}

#[test]
fn a_new_run_refuses_to_overwrite_an_existing_one() {
    let dir = tempfile::tempdir().unwrap();
    train(quick_config(1), dir.path());
    let before = std::fs::read(dir.path().join("metrics.jsonl")).unwrap();
    let err = trainrt::train(
        sandbox(),
        RunRequest {
            config: quick_config(1),
            run_dir: dir.path().to_path_buf(),
            resume: false,
        },
        &mut Quiet,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("already holds a run") && err.contains("--resume"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("metrics.jsonl")).unwrap(),
        before
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Kills `trainrt run` with SIGKILL at a spread of moments (some land mid-checkpoint); each time
/// the last checkpoint must load and `--resume` must finish the run.
#[test]
fn sigkill_at_any_point_leaves_a_resumable_run() {
    use std::process::Stdio;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let mut resumed = 0;
    // Delays after the first checkpoint appears, so every kill lands mid-training; epochs take a
    // few milliseconds each, so these spread over checkpoint writes and training steps alike.
    for (i, delay_ms) in [0u64, 2, 5, 9, 14, 22].into_iter().enumerate() {
        let run = dir.path().join(format!("r{i}"));
        let mut child = crate::common::trainrt_command()
            .args([
                "run",
                "--epochs",
                "400",
                "--threads",
                "1",
                "--callback",
                "early-stopping:patience=1000",
                "--run-dir",
            ])
            .arg(&run)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let last = run.join("checkpoints/last.safetensors");
        let waited = std::time::Instant::now();
        while !last.exists() && waited.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        trainrt::checkpoint::load(&last).expect("the last checkpoint is loadable after SIGKILL");
        let epoch = trainrt::checkpoint::load(&last).unwrap().meta.epoch;
        let out = crate::common::trainrt_command()
            .args(["run", "--threads", "1", "--epochs"])
            .arg((epoch + 2).to_string())
            .arg("--resume")
            .arg(&run)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "resume after SIGKILL failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let metrics = jsonl(&run, "metrics.jsonl");
        let epochs: Vec<u64> = metrics
            .iter()
            .map(|m| m["epoch"].as_u64().unwrap())
            .collect();
        assert_eq!(
            epochs,
            (0..u64::from(epoch) + 2).collect::<Vec<_>>(),
            "one metrics line per epoch"
        );
        resumed += 1;
    }
    assert_eq!(resumed, 6);
}

/// A read-only run directory is a clear error before anything is written.
#[test]
fn a_read_only_run_directory_is_a_clear_error() {
    let Some(fs) = Tmpfs::mount("ro,size=1m") else {
        return;
    };
    let out = crate::common::trainrt_command()
        .args(["run", "--epochs", "1", "--threads", "1", "--run-dir"])
        .arg(fs.path().join("run"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("Read-only file system") && stderr.contains("--run-dir"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(fs.path()).unwrap().count(), 0);
}

/// A disk that fills up mid-run ends the run with a clear error, leaves no partial file, and the
/// last checkpoint written is intact: the run resumes once there is room again.
#[test]
fn a_full_disk_ends_the_run_cleanly_and_it_resumes_elsewhere() {
    // Room for the config, a few epochs' logs and checkpoints, not for 400 epochs.
    let Some(fs) = Tmpfs::mount("size=200k") else {
        return;
    };
    let run = fs.path().join("run");
    let out = crate::common::trainrt_command()
        .args(["run", "--epochs", "400", "--threads", "1"])
        .args(["--callback", "early-stopping:patience=1000", "--run-dir"])
        .arg(&run)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("No space left on device") && stderr.contains("disk is full"),
        "{stderr}"
    );
    let files = walk(&run);
    assert!(
        files
            .iter()
            .all(|f| !f.file_name().unwrap().to_string_lossy().contains(".tmp")),
        "partial files left: {files:?}"
    );
    let last = run.join("checkpoints/last.safetensors");
    let epoch = trainrt::checkpoint::load(&last)
        .expect("the last checkpoint is intact")
        .meta
        .epoch;

    // Moved to a disk with room, the run continues from that checkpoint.
    let roomy = tempfile::tempdir().unwrap();
    let moved = roomy.path().join("run");
    for f in &files {
        let to = moved.join(f.strip_prefix(&run).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(f, to).unwrap();
    }
    let out = crate::common::trainrt_command()
        .args(["run", "--threads", "1", "--epochs"])
        .arg((epoch + 1).to_string())
        .arg("--resume")
        .arg(&moved)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let epochs: Vec<u64> = jsonl(&moved, "metrics.jsonl")
        .iter()
        .map(|m| m["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(epochs, (0..u64::from(epoch) + 1).collect::<Vec<_>>());
}

/// `metrics.csv` (Keras' CSVLogger layout) holds exactly what `metrics.jsonl` holds, custom
/// metrics included, across a resume.
#[test]
fn metrics_csv_matches_metrics_jsonl_across_a_resume() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    train(config_with_state(2), &run);
    resume(config_with_state(4), &run).unwrap();
    let lines = jsonl(&run, "metrics.jsonl");
    assert_eq!(lines.len(), 4);
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let mut rows = csv.lines();
    let header: Vec<&str> = rows.next().unwrap().split(',').collect();
    assert_eq!(header[0], "epoch");
    assert!(header.contains(&"early_stopping_wait"), "{header:?}");
    let mut sorted = header[1..].to_vec();
    sorted.sort_unstable();
    assert_eq!(header[1..], sorted[..], "columns after epoch are sorted");
    let rows: Vec<Vec<&str>> = rows.map(|r| r.split(',').collect()).collect();
    assert_eq!(rows.len(), lines.len());
    for (row, line) in rows.iter().zip(&lines) {
        for (column, cell) in header.iter().zip(row) {
            let expected = match &line[*column] {
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::String(s) if s == "NaN" => "nan".into(),
                other => panic!("{column}: unexpected {other}"),
            };
            assert_eq!(*cell, expected, "{column} in {line}");
        }
    }
}

/// The TensorBoard events (read back here with the crate's own reader, which checks every
/// checksum; `scripts/check-tensorboard.sh` reads them with TensorBoard's) hold each epoch's
/// metrics at its last step, the loss every 10 steps and applied decisions as text; a resumed run
/// starts a new file that tells TensorBoard to drop anything past its checkpoint.
#[test]
fn tensorboard_events_hold_the_metrics_and_a_resume_marks_where_it_starts() {
    use trainrt::rundir::tensorboard::read::{Point, points};
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut config = quick_config(2);
    config
        .push_callback("reduce-lr-on-plateau:patience=0,min_delta=100")
        .unwrap();
    train(config.clone(), &run);
    config.epochs = 3;
    resume(config, &run).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(run.join("tensorboard"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    let all: Vec<Vec<Point>> = files
        .iter()
        .map(|f| points(&std::fs::read(f).unwrap()).unwrap())
        .collect();
    let metrics = jsonl(&run, "metrics.jsonl");
    let epoch_loss: Vec<(u64, f32)> = all
        .iter()
        .flatten()
        .filter_map(|p| match p {
            Point::Scalar(tag, step, v) if tag == "epoch/loss" => Some((*step, *v)),
            _ => None,
        })
        .collect();
    let expected: Vec<(u64, f32)> = metrics
        .iter()
        .map(|m| {
            (
                m["step"].as_u64().unwrap(),
                m["loss"].as_f64().unwrap() as f32,
            )
        })
        .collect();
    assert_eq!(epoch_loss, expected);
    let last_step = expected.last().unwrap().0;
    let batch_steps: Vec<u64> = all
        .iter()
        .flatten()
        .filter_map(|p| match p {
            Point::Scalar(tag, step, _) if tag == "batch/loss" => Some(*step),
            _ => None,
        })
        .collect();
    assert_eq!(
        batch_steps,
        (10..=last_step).step_by(10).collect::<Vec<_>>()
    );
    // The resumed run's file starts one step past the checkpoint it resumed from.
    assert_eq!(all[1][0], Point::Start(expected[1].0 + 1));
    let texts = all
        .iter()
        .flatten()
        .filter(|p| matches!(p, Point::Text(tag, _, text) if tag == "decisions" && text.contains("set-learning-rate")))
        .count();
    let applied = jsonl(&run, "decisions.jsonl")
        .iter()
        .filter(|d| d["status"] == "applied" && d["decision"]["kind"] == "set-learning-rate")
        .count();
    assert!(applied > 0);
    assert_eq!(texts, applied);
}
