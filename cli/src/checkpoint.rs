//! `trainrt checkpoint`: what a checkpoint file holds, after verifying it.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::Tensor;
use clap::Args;
use serde_json::{Value, json};
use trainrt::checkpoint;

use crate::Failure;

/// `trainrt checkpoint FILE`
#[derive(Args)]
pub struct CheckpointArgs {
    /// A checkpoint (`runs/<run>/checkpoints/<tag>.safetensors`), or a run directory for its
    /// `last` checkpoint.
    path: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

impl CheckpointArgs {
    /// Loads the checkpoint (which verifies its checksum) and prints its metadata, the size of
    /// each callback's state and its tensors.
    pub fn execute(self) -> Result<u8, Failure> {
        let path = if self.path.is_dir() {
            self.path.join("checkpoints").join("last.safetensors")
        } else {
            self.path
        };
        let loaded = checkpoint::load(&path).map_err(Failure::usage)?;
        let meta = &loaded.meta;
        let states: Vec<Value> = meta
            .callback_states
            .iter()
            .map(|c| json!({"name": c.name, "state_bytes": c.state.len()}))
            .collect();
        let tensors: Vec<Value> = [("model.", &loaded.model), ("optim.", &loaded.optimizer)]
            .into_iter()
            .flat_map(|(prefix, named)| described(prefix, named))
            .collect();
        if self.json {
            let value = json!({
                "path": path,
                "verified": true,
                "format_version": meta.format_version,
                "tag": loaded.tag,
                "epoch": meta.epoch,
                "step": meta.step,
                "lr": meta.lr,
                "model": meta.model,
                "optimizer": meta.optimizer,
                "seed": meta.seed,
                "callback_states": states,
                "extra": meta.extra,
                "tensors": tensors,
            });
            println!("{value}");
            return Ok(0);
        }
        println!(
            "{}: checkpoint `{}`, checksum verified (format {})",
            path.display(),
            loaded.tag,
            meta.format_version
        );
        println!(
            "  {} epochs completed, step {}; learning rate {}",
            meta.epoch, meta.step, meta.lr
        );
        println!(
            "  model {}; optimizer {}; seed {}",
            meta.model, meta.optimizer, meta.seed
        );
        if !meta.extra.is_null() {
            println!("  extra: {}", meta.extra);
        }
        println!("callback states:");
        if meta.callback_states.is_empty() {
            println!("  (none)");
        }
        for c in &meta.callback_states {
            println!("  {}: {} bytes", c.name, c.state.len());
        }
        println!("tensors:");
        for t in &tensors {
            let text = |key: &str| t[key].as_str().unwrap_or_default().to_string();
            println!("  {} {} {}", text("name"), text("dtype"), t["shape"]);
        }
        Ok(0)
    }
}

/// Name, dtype and shape of each tensor, in name order.
fn described(prefix: &str, named: &HashMap<String, Tensor>) -> Vec<Value> {
    let mut names: Vec<&String> = named.keys().collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let t = &named[name];
            json!({
                "name": format!("{prefix}{name}"),
                "dtype": format!("{:?}", t.dtype()).to_lowercase(),
                "shape": t.dims(),
            })
        })
        .collect()
}
