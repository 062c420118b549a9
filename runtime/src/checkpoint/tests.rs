//! Checkpoint format, atomicity and corruption tests.

use super::*;
use candle_core::DType;
use safetensors::tensor::Dtype;

fn meta() -> CheckpointMeta {
    CheckpointMeta {
        format_version: 0,
        epoch: 3,
        step: 1234,
        lr: 0.05,
        model: "mlp(64-128-10)".into(),
        optimizer: "sgd:momentum=0.9,weight_decay=0.0,nesterov=false".into(),
        seed: 42,
        callback_states: vec![
            CallbackState {
                name: "early-stop".into(),
                state: vec![0, 1, 0xab, 0xff],
            },
            CallbackState {
                name: "empty".into(),
                state: vec![],
            },
        ],
        extra: serde_json::json!({ "run": "demo" }),
    }
}

type Named = Vec<(String, Tensor)>;

fn tensors() -> (Named, Named) {
    let dev = Device::Cpu;
    let w = Tensor::new(
        &[[1.5f32, -0.0, f32::MIN_POSITIVE], [3.0, 1e-30, -7.25]],
        &dev,
    )
    .unwrap();
    let b = Tensor::new(&[0.1f32, 0.2], &dev).unwrap();
    let model = vec![
        ("fc0.weight".to_string(), w.t().unwrap()),
        ("fc0.bias".to_string(), b),
    ];
    let step = Tensor::new(&[1234i64], &dev).unwrap();
    let m = Tensor::new(&[0.5f32, -0.5], &dev).unwrap();
    (
        model,
        vec![
            ("step".to_string(), step),
            ("momentum.fc0.bias".to_string(), m),
        ],
    )
}

fn bits(t: &Tensor) -> Vec<u8> {
    let t = t.flatten_all().unwrap();
    match t.dtype() {
        DType::F32 => t
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::I64 => t
            .to_vec1::<i64>()
            .unwrap()
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn one_state_encodes_to_the_same_bytes_under_any_tag() {
    let dir = tempfile::tempdir().unwrap();
    let (model, optim) = tensors();
    let first = encode(dir.path(), "best", &meta(), &model, &optim).unwrap();
    // Several encodings, since the metadata map's order would differ about every other time.
    for tag in ["last", "best", "epoch-3", "last"] {
        let again = encode(dir.path(), tag, &meta(), &model, &optim).unwrap();
        assert!(again.bytes == first.bytes, "{tag} differs from best");
    }
    let moved = CheckpointMeta {
        step: 1235,
        ..meta()
    };
    let other = encode(dir.path(), "last", &moved, &model, &optim).unwrap();
    assert!(other.bytes != first.bytes);
}

#[test]
fn save_and_load_round_trip_bitwise() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt_dir = dir.path().join("checkpoints");
    let (model, optim) = tensors();
    let path = save(&ckpt_dir, "epoch-3", &meta(), &model, &optim).unwrap();
    assert_eq!(path, ckpt_dir.join("epoch-3.safetensors"));
    let loaded = load(&path).unwrap();
    let expected = CheckpointMeta {
        format_version: FORMAT_VERSION,
        ..meta()
    };
    assert_eq!(loaded.meta, expected);
    assert_eq!(loaded.tag, "epoch-3");
    for (saved, restored) in [(&model, &loaded.model), (&optim, &loaded.optimizer)] {
        assert_eq!(saved.len(), restored.len());
        for (name, t) in saved {
            let r = &restored[name];
            assert_eq!((r.dims(), r.dtype()), (t.dims(), t.dtype()), "{name}");
            assert_eq!(bits(r), bits(t), "{name}");
        }
    }
    let mut names: Vec<_> = std::fs::read_dir(&ckpt_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["epoch-3.safetensors"],
        "one file per checkpoint, no temp files left behind"
    );
}

#[test]
fn corrupt_or_foreign_files_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (model, optim) = tensors();
    let path = save(dir.path(), "c", &meta(), &model, &optim).unwrap();
    let good = std::fs::read(&path).unwrap();
    let write = |bytes: &[u8]| std::fs::write(&path, bytes).unwrap();
    let err = |bytes: &[u8]| {
        write(bytes);
        load(&path).unwrap_err().to_string()
    };
    let prefix = format!("checkpoint {} is corrupt:", path.display());

    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01; // A bit in the tensor data.
    let e = err(&flipped);
    assert!(
        e.starts_with(&prefix) && e.contains("checksum mismatch"),
        "{e}"
    );
    let e = err(&good[..good.len() - 4]);
    assert!(e.starts_with(&prefix), "{e}");
    assert!(err(b"not a checkpoint at all").starts_with(&prefix));
    assert!(err(b"").starts_with(&prefix));

    let plain = safetensors::tensor::serialize(
        [(
            "x",
            &CpuTensor {
                dtype: Dtype::U8,
                shape: vec![1],
                bytes: vec![7],
            },
        )],
        None,
    )
    .unwrap();
    assert!(err(&plain).contains("is not a trainrt checkpoint"));

    let version = br#"\"format_version\":1"#;
    let at = good
        .windows(version.len())
        .position(|w| w == version)
        .unwrap();
    let mut future = good.clone();
    future[at + version.len() - 1] = b'9';
    let e = err(&future);
    assert!(
        e.contains("has format version 9; this build reads version 1"),
        "{e}"
    );

    let missing = load(&dir.path().join("nope.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(
        missing.starts_with("cannot read checkpoint") && missing.contains("nope.safetensors"),
        "{missing}"
    );
}

#[test]
fn tags_that_could_escape_the_directory_are_rejected() {
    for bad in [
        "../../etc/passwd",
        "",
        ".",
        "..",
        ".hidden",
        "a/b",
        "a\\b",
        "tag with space",
        "é",
        &"x".repeat(65),
        "best.",
        "CON",
        "nul",
        "Aux.best",
        "com1",
        "LPT9.x",
    ] {
        assert!(validate_tag(bad).is_err(), "{bad:?} accepted");
    }
    for good in [
        "best",
        "epoch-3",
        "step_100.v2",
        "A",
        &"x".repeat(64),
        "console",
        "com10",
        "com0",
        "nul-1",
    ] {
        assert_eq!(validate_tag(good), Ok(()), "{good:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let (model, optim) = tensors();
    let err = save(dir.path(), "../escape", &meta(), &model, &optim).unwrap_err();
    assert!(matches!(err, CheckpointError::InvalidTag { .. }), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    assert!(
        !dir.path()
            .parent()
            .unwrap()
            .join("escape.safetensors")
            .exists()
    );
}

#[test]
fn unencodable_checkpoints_are_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let (model, _) = tensors();
    let twice = [model.clone(), model].concat();
    let err = save(dir.path(), "d", &meta(), &twice, &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`model.fc0.weight`") && err.contains("used twice"),
        "{err}"
    );
    let nan = CheckpointMeta {
        lr: f64::NAN,
        ..meta()
    };
    let err = save(dir.path(), "n", &nan, &[], &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("learning rate NaN is not finite"), "{err}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written"
    );
}
