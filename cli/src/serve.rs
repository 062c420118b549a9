//! `trainrt serve`, `trainrt admin` and the hidden `trainrt job-exec` (the service's job process).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use trainrt_service::auth::issue_token;
use trainrt_service::model::{Quota, check_tenant_name};
use trainrt_service::server::open_store;
use trainrt_service::{ServeConfig, job_process};

use crate::Failure;

/// The data directory when none is given.
const DEFAULT_DATA_DIR: &str = "trainrt-data";

/// `trainrt serve`
#[derive(Args)]
pub struct ServeArgs {
    /// Where the database and artifacts live (created if missing).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DATA_DIR, env = "TRAINRT_DATA_DIR")]
    data_dir: PathBuf,
    /// Address to listen on (`127.0.0.1:0` picks a free port, printed at start).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8700")]
    listen: SocketAddr,
    /// Jobs run at once; 0 serves the API only.
    #[arg(long, value_name = "N", default_value_t = 2)]
    workers: usize,
    /// Requests a second per token, sustained (bursts of four times as many).
    #[arg(long, value_name = "N", default_value_t = 50.0)]
    rate_limit: f64,
}

impl ServeArgs {
    /// Runs the service until SIGTERM or Ctrl-C.
    pub fn execute(self) -> Result<u8, Failure> {
        if self.rate_limit.is_nan() || self.rate_limit <= 0.0 {
            return Err(Failure::usage(anyhow::anyhow!(
                "--rate-limit must be above 0"
            )));
        }
        let mut config = ServeConfig::new(self.data_dir);
        config.listen = self.listen;
        config.workers = self.workers;
        config.api.requests_per_second = self.rate_limit;
        config.api.burst = self.rate_limit * 4.0;
        config.exe = std::env::current_exe()
            .context("cannot find the trainrt binary to run jobs with")
            .map_err(Failure::failed)?;
        runtime()?
            .block_on(trainrt_service::serve(config))
            .map_err(Failure::failed)?;
        Ok(0)
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(Failure::failed)
}

/// `trainrt admin …`: the operator's commands, run against the data directory's database
/// (also while the server runs).
#[derive(Args)]
pub struct AdminArgs {
    /// The service's data directory.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DATA_DIR, env = "TRAINRT_DATA_DIR", global = true)]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant; prints its API token once, as the last word of the output.
    Create {
        /// The tenant's name.
        name: String,
        /// Jobs it may run at once.
        #[arg(long)]
        max_running: Option<u32>,
        /// Jobs it may have queued.
        #[arg(long)]
        max_queued: Option<u32>,
        /// CPU-seconds its jobs may use in all.
        #[arg(long)]
        cpu_seconds: Option<f64>,
        /// Bytes it may store (uploads, run directories, checkpoints).
        #[arg(long)]
        storage_bytes: Option<u64>,
        /// The whole quota as JSON (see GET /v1/quota); the flags above override it.
        #[arg(long, value_name = "JSON")]
        quota: Option<String>,
    },
    /// List tenants with their quotas and usage, as JSON lines.
    List,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Issue a token: for a tenant, or with --operator for the admin endpoints. Prints it once,
    /// as the last word of the output.
    Create {
        /// The tenant.
        #[arg(required_unless_present = "operator", conflicts_with = "operator")]
        tenant: Option<String>,
        /// An operator token (tenants, quotas, every job).
        #[arg(long)]
        operator: bool,
    },
    /// Revoke a token by its id (`tok_…`).
    Revoke {
        /// The token's id.
        id: String,
    },
}

impl AdminArgs {
    /// Runs the admin command.
    pub fn execute(self) -> Result<u8, Failure> {
        runtime()?.block_on(self.run())
    }

    async fn run(self) -> Result<u8, Failure> {
        let store = open_store(&self.data_dir).await.map_err(Failure::failed)?;
        match self.command {
            AdminCommand::Tenant(TenantCommand::Create {
                name,
                max_running,
                max_queued,
                cpu_seconds,
                storage_bytes,
                quota,
            }) => {
                check_tenant_name(&name).map_err(|m| Failure::usage(anyhow::anyhow!(m)))?;
                let mut quota: Quota = match quota {
                    Some(json) => serde_json::from_str(&json)
                        .context("invalid --quota")
                        .map_err(Failure::usage)?,
                    None => Quota::default(),
                };
                quota.max_running = max_running.unwrap_or(quota.max_running);
                quota.max_queued = max_queued.unwrap_or(quota.max_queued);
                quota.cpu_seconds = cpu_seconds.unwrap_or(quota.cpu_seconds);
                quota.storage_bytes = storage_bytes.unwrap_or(quota.storage_bytes);
                let tenant = store
                    .create_tenant(&name, &quota)
                    .await
                    .map_err(Failure::usage)?;
                let token = issue_token(store.as_ref(), Some(tenant.id))
                    .await
                    .map_err(Failure::failed)?;
                println!(
                    "created tenant {name} (max {} running, {} queued); token {} (shown once):\n{}",
                    quota.max_running, quota.max_queued, token.id, token.secret
                );
            }
            AdminCommand::Tenant(TenantCommand::List) => {
                for tenant in store.tenants().await.map_err(Failure::failed)? {
                    let usage = store.usage(tenant.id).await.map_err(Failure::failed)?;
                    let line = serde_json::json!({"name": tenant.name, "quota": tenant.quota, "usage": usage});
                    println!("{line}");
                }
            }
            AdminCommand::Token(TokenCommand::Create { tenant, operator }) => {
                let (owner, label) = if operator {
                    (None, "the operator".to_string())
                } else {
                    let name = tenant.unwrap_or_default();
                    let found = store
                        .tenant_by_name(&name)
                        .await
                        .map_err(Failure::failed)?
                        .ok_or_else(|| {
                            Failure::usage(anyhow::anyhow!("no tenant named '{name}'"))
                        })?;
                    (Some(found.id), format!("tenant {name}"))
                };
                let token = issue_token(store.as_ref(), owner)
                    .await
                    .map_err(Failure::failed)?;
                println!(
                    "token {} for {label} (shown once):\n{}",
                    token.id, token.secret
                );
            }
            AdminCommand::Token(TokenCommand::Revoke { id }) => {
                if !store.revoke_token(&id).await.map_err(Failure::failed)? {
                    return Err(Failure::usage(anyhow::anyhow!(
                        "no live token with id '{id}'"
                    )));
                }
                println!("revoked {id}");
            }
        }
        Ok(0)
    }
}

/// `trainrt job-exec JOB_DIR` (hidden): one job attempt of the service, as its own process.
#[derive(Args)]
pub struct JobExecArgs {
    /// The job's directory, holding its `plan.json`.
    job_dir: PathBuf,
}

impl JobExecArgs {
    /// Trains the job's plan, reporting on stdout.
    pub fn execute(self) -> Result<u8, Failure> {
        let sandbox = Arc::new(crate::compile::sandbox()?);
        job_process::run(&self.job_dir, sandbox).map_err(Failure::failed)?;
        Ok(0)
    }
}
