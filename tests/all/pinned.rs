//! Determinism pinned across refactors: a seeded digits run with every bundled callback deciding
//! (early stopping with a restore, a best checkpoint, a per-step schedule and a plateau
//! schedule) must end with bitwise the same weights and the same
//! `decisions.jsonl` as the run recorded when this test was written (e260511).
//!
//! The expected digests hold for x86_64 CPUs (candle's CPU kernels give the same bits with AVX2
//! and AVX-512). If a deliberate change of training or of a bundled callback's decisions moves
//! them, rerun with `TRAINRT_PIN_PRINT=1 cargo test --test all pinned:: -- --nocapture` and update
//! the constants in the same commit, saying why.

use sha2::{Digest, Sha256};

use crate::common::{quick_config, train, weights};

const WEIGHTS_SHA256: &str = "6aa4830b4d90e43c4831014055bec4fd5390c4faefc4d6c3bd6fde615bccd2ef";
const DECISIONS_SHA256: &str = "8001fd1157e7db3ce4e8ccd8c1425cc3cb1111f87ffb7d63234c83c5d24238ae";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
#[cfg_attr(not(target_arch = "x86_64"), ignore = "digests recorded on x86_64")]
fn bundled_callbacks_run_is_bitwise_what_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = quick_config(30);
    for spec in [
        "logger",
        "lr-schedule:per=step,schedule=exponential,gamma=0.9995,warmup=20",
        "early-stopping:monitor=val_loss,patience=3,restore_best=true",
        "model-checkpoint:monitor=val_accuracy,save_best_only=true",
        "reduce-lr-on-plateau:monitor=val_loss,factor=0.5,patience=1",
        "terminate-on-nan",
    ] {
        config.push_callback(spec).unwrap();
    }
    let summary = train(config, dir.path());

    let mut digest = Sha256::new();
    for (name, bytes) in weights(dir.path(), "last") {
        digest.update(name.as_bytes());
        digest.update(&bytes);
    }
    let weights_sha = hex(&digest.finalize());
    let decisions = std::fs::read(dir.path().join("decisions.jsonl")).unwrap();
    let decisions_sha = hex(&Sha256::digest(&decisions));
    if std::env::var_os("TRAINRT_PIN_PRINT").is_some() {
        println!(
            "outcome {:?} after {} epochs",
            summary.outcome, summary.epochs_completed
        );
        println!("WEIGHTS_SHA256 = {weights_sha}\nDECISIONS_SHA256 = {decisions_sha}");
        println!("{}", String::from_utf8_lossy(&decisions));
    }
    // The run must exercise what it pins: a stop, a restore, saves, rates and custom metrics.
    let text = String::from_utf8_lossy(&decisions);
    for expected in [
        "\"stop-training\"",
        "\"restore-checkpoint\"",
        "\"save-checkpoint\"",
        "\"set-learning-rate\"",
        "\"log-metric\"",
    ] {
        assert!(
            text.contains(expected),
            "the pinned run no longer decides {expected}"
        );
    }
    assert_eq!(weights_sha, WEIGHTS_SHA256, "final weights changed");
    assert_eq!(decisions_sha, DECISIONS_SHA256, "decisions.jsonl changed");
}
