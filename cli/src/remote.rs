//! `trainrt remote …`: the training service from the command line. The server comes from
//! `--server` or `TRAINRT_SERVER`; the token from `TRAINRT_TOKEN` or the file
//! `$XDG_CONFIG_HOME/trainrt/token` (`~/.config/trainrt/token`), and is never printed.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use trainrt::bundled;
use trainrt::data::DataSpec;

use crate::Failure;
use crate::run::RunSettings;

/// `trainrt remote …`
#[derive(Args)]
pub struct RemoteArgs {
    /// The service's URL.
    #[arg(
        long,
        env = "TRAINRT_SERVER",
        default_value = "http://127.0.0.1:8700",
        global = true
    )]
    server: String,
    /// Print JSON, one object per line, for scripts.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: RemoteCommand,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum RemoteCommand {
    /// Callback components: upload (checked as `trainrt check` does) and list.
    #[command(subcommand)]
    Callbacks(UploadCommand),
    /// CSV datasets: upload and list.
    #[command(subcommand)]
    Datasets(UploadCommand),
    /// Submit a job: the same flags as `trainrt run`. Local `.wasm` callbacks and `csv:` data
    /// are uploaded first and named by their file names.
    Submit(SubmitArgs),
    /// List jobs, newest first.
    Jobs {
        /// Only jobs in this state.
        #[arg(long)]
        state: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show a job.
    Status {
        /// The job's id.
        job: String,
    },
    /// Print a job's events; with --follow, live until it ends.
    Logs {
        /// The job's id.
        job: String,
        /// Keep printing events as they happen, until the job ends.
        #[arg(long, short)]
        follow: bool,
    },
    /// Cancel a job.
    Cancel {
        /// The job's id.
        job: String,
    },
    /// Download a checkpoint of a job.
    Download {
        /// The job's id.
        job: String,
        /// The checkpoint's tag.
        #[arg(long, default_value = "last")]
        checkpoint: String,
        /// Where to write it (default: TAG.safetensors).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Your quota and usage.
    Quota,
}

#[derive(Subcommand)]
enum UploadCommand {
    /// Upload a file; jobs name it by its file name (or --name).
    Upload {
        /// The file.
        file: PathBuf,
        /// The name jobs refer to it by.
        #[arg(long)]
        name: Option<String>,
    },
    /// List your uploads.
    List,
}

/// `trainrt remote submit`
#[derive(Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    settings: RunSettings,
    /// Makes a retried submit return the first job instead of queueing another.
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
}

impl RemoteArgs {
    /// Runs the remote command.
    pub fn execute(self) -> Result<u8, Failure> {
        let client = Client::new(&self.server).map_err(Failure::usage)?;
        let json = self.json;
        match self.command {
            RemoteCommand::Callbacks(cmd) => uploads(&client, cmd, "callbacks", json),
            RemoteCommand::Datasets(cmd) => uploads(&client, cmd, "datasets", json),
            RemoteCommand::Submit(args) => submit(&client, args, json),
            RemoteCommand::Jobs { state, limit } => {
                let mut path = format!("/v1/jobs?limit={limit}");
                if let Some(state) = state {
                    path.push_str(&format!("&state={state}"));
                }
                let page = client.get_json(&path)?;
                for job in page["jobs"].as_array().into_iter().flatten() {
                    print_job(job, json);
                }
                Ok(0)
            }
            RemoteCommand::Status { job } => {
                print_job(&client.get_json(&format!("/v1/jobs/{job}"))?, json);
                Ok(0)
            }
            RemoteCommand::Logs { job, follow } => logs(&client, &job, follow, json),
            RemoteCommand::Cancel { job } => {
                let job = client.send_json("POST", &format!("/v1/jobs/{job}/cancel"), None, &[])?;
                print_job(&job, json);
                Ok(0)
            }
            RemoteCommand::Download {
                job,
                checkpoint,
                output,
            } => {
                let output =
                    output.unwrap_or_else(|| PathBuf::from(format!("{checkpoint}.safetensors")));
                let bytes = client
                    .download(&format!("/v1/jobs/{job}/checkpoints/{checkpoint}"), &output)?;
                if json {
                    println!("{}", serde_json::json!({"path": output, "bytes": bytes}));
                } else {
                    println!("wrote {} ({bytes} bytes)", output.display());
                }
                Ok(0)
            }
            RemoteCommand::Quota => {
                let report = client.get_json("/v1/quota")?;
                println!(
                    "{}",
                    if json {
                        report.to_string()
                    } else {
                        pretty(&report)
                    }
                );
                Ok(0)
            }
        }
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

fn print_job(job: &Value, json: bool) {
    if json {
        println!("{job}");
        return;
    }
    let reason = job["reason"]
        .as_str()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    println!(
        "{}  {:<9}  attempts {}  cpu {:.1}s{}",
        job["id"].as_str().unwrap_or("?"),
        job["state"].as_str().unwrap_or("?"),
        job["attempts"],
        job["cpu_seconds"].as_f64().unwrap_or(0.0),
        reason
    );
}

fn uploads(client: &Client, cmd: UploadCommand, kind: &str, json: bool) -> Result<u8, Failure> {
    match cmd {
        UploadCommand::Upload { file, name } => {
            let upload = client.upload(kind, &file, name.as_deref())?;
            if json {
                println!("{upload}");
            } else {
                println!(
                    "uploaded {} as {} (sha256:{})",
                    file.display(),
                    upload["name"].as_str().unwrap_or("?"),
                    upload["sha256"].as_str().unwrap_or("?")
                );
            }
        }
        UploadCommand::List => {
            for upload in client
                .get_json(&format!("/v1/{kind}"))?
                .as_array()
                .into_iter()
                .flatten()
            {
                if json {
                    println!("{upload}");
                } else {
                    println!(
                        "{}  sha256:{}  {} bytes",
                        upload["name"].as_str().unwrap_or("?"),
                        upload["sha256"].as_str().unwrap_or("?"),
                        upload["bytes"]
                    );
                }
            }
        }
    }
    Ok(0)
}

fn submit(client: &Client, args: SubmitArgs, json: bool) -> Result<u8, Failure> {
    let mut config = args.settings.apply(None)?;
    // Local files travel as uploads, named by their file names.
    for callback in &mut config.callbacks {
        let source = callback.spec.source.clone();
        if bundled::names().any(|n| n == source) {
            continue;
        }
        let path = Path::new(&source);
        let upload = client.upload("callbacks", path, None)?;
        callback.spec.source = upload["name"].as_str().unwrap_or_default().to_string();
    }
    if let DataSpec::Csv { path, .. } = &mut config.data
        && path.exists()
    {
        let upload = client.upload("datasets", path, None)?;
        *path = PathBuf::from(upload["name"].as_str().unwrap_or_default());
    }
    let body = serde_json::to_value(&config).map_err(|e| Failure::failed(anyhow!(e)))?;
    let mut headers = Vec::new();
    if let Some(key) = &args.idempotency_key {
        headers.push(("Idempotency-Key", key.as_str()));
    }
    let job = client.send_json("POST", "/v1/jobs", Some(&body), &headers)?;
    if json {
        println!("{job}");
    } else {
        println!("submitted {}", job["id"].as_str().unwrap_or("?"));
    }
    Ok(0)
}

fn logs(client: &Client, job: &str, follow: bool, json: bool) -> Result<u8, Failure> {
    let show = |event: &Value| {
        if json {
            println!("{event}");
        } else {
            println!("{}", describe(event));
        }
        let _ = std::io::stdout().flush();
    };
    if !follow {
        let mut after = 0;
        loop {
            let page = client.get_json(&format!("/v1/jobs/{job}/events?after={after}"))?;
            let events = page["events"].as_array().cloned().unwrap_or_default();
            events.iter().for_each(show);
            after = page["next_after"].as_i64().unwrap_or(after);
            if events.is_empty() || page["done"] == true {
                return Ok(0);
            }
        }
    }
    // Live: reconnect with Last-Event-ID when the connection drops, until the job ends. A
    // person sees the epochs as a bar under the events (hidden when stderr is not a terminal).
    let bar = (!json).then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] epoch {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(job.to_string());
        bar
    });
    let mut last = 0i64;
    let mut final_state = None;
    for _ in 0..1000 {
        match client.stream(job, last, |event| {
            last = event["seq"].as_i64().unwrap_or(last);
            if event["kind"] == "state" {
                final_state = event["data"]["state"].as_str().map(str::to_string);
            }
            match &bar {
                Some(bar) => {
                    match event["kind"].as_str() {
                        Some("started") => {
                            bar.set_length(event["data"]["epochs"].as_u64().unwrap_or(0))
                        }
                        Some("epoch") => {
                            bar.set_position(event["data"]["epoch"].as_u64().map_or(0, |e| e + 1));
                            let val = event["data"]["val_accuracy"].as_f64().unwrap_or(f64::NAN);
                            bar.set_message(format!("val_accuracy {val:.4}"));
                        }
                        _ => {}
                    }
                    // A hidden bar (stderr not a terminal) prints nothing: print plainly.
                    if bar.is_hidden() {
                        show(&event);
                    } else {
                        bar.println(describe(&event));
                    }
                }
                None => show(&event),
            }
        }) {
            Ok(()) => {}
            Err(e) if e.code == 2 => return Err(e),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(500)),
        }
        let state = client.get_json(&format!("/v1/jobs/{job}"))?["state"]
            .as_str()
            .map(str::to_string);
        if matches!(
            state.as_deref(),
            Some("succeeded" | "stopped" | "failed" | "cancelled")
        ) && final_state == state
        {
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            return Ok(0);
        }
    }
    Err(Failure::failed(anyhow!(
        "the event stream kept dropping; giving up"
    )))
}

/// One line for a person.
fn describe(event: &Value) -> String {
    let data = &event["data"];
    let body = match event["kind"].as_str().unwrap_or("") {
        "state" => format!(
            "state {}{}",
            data["state"].as_str().unwrap_or("?"),
            data["reason"]
                .as_str()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
        "epoch" => format!(
            "epoch {}  loss {:.4}  acc {:.4}  val_loss {:.4}  val_acc {:.4}",
            data["epoch"],
            data["loss"].as_f64().unwrap_or(f64::NAN),
            data["accuracy"].as_f64().unwrap_or(f64::NAN),
            data["val_loss"].as_f64().unwrap_or(f64::NAN),
            data["val_accuracy"].as_f64().unwrap_or(f64::NAN)
        ),
        "decision" => format!(
            "decision by {}: {} ({})",
            data["callback"].as_str().unwrap_or("?"),
            data["decision"],
            data["status"].as_str().unwrap_or("?")
        ),
        "fault" => format!(
            "fault in {}: {} {}",
            data["callback"].as_str().unwrap_or("?"),
            data["kind"].as_str().unwrap_or("?"),
            data["message"].as_str().unwrap_or("")
        ),
        "log" => format!(
            "[{}] {}: {}",
            data["level"].as_str().unwrap_or("?"),
            data["callback"].as_str().unwrap_or("?"),
            data["message"].as_str().unwrap_or("")
        ),
        kind => format!("{kind} {data}"),
    };
    format!("#{:<5} {body}", event["seq"])
}

/// The HTTP client: the server's URL and the token.
struct Client {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Client {
    fn new(server: &str) -> anyhow::Result<Self> {
        let base = server.trim_end_matches('/').to_string();
        if !base.starts_with("http://") {
            bail!(
                "--server/TRAINRT_SERVER must be an http:// URL (got '{server}'); put TLS termination in front of `trainrt serve` and point this at it over http on a trusted network"
            );
        }
        let token = match std::env::var("TRAINRT_TOKEN") {
            Ok(token) if !token.trim().is_empty() => token.trim().to_string(),
            _ => {
                let path = token_file();
                std::fs::read_to_string(&path)
                    .map(|t| t.trim().to_string())
                    .with_context(|| {
                        format!(
                            "no API token: set TRAINRT_TOKEN or write it to {}",
                            path.display()
                        )
                    })?
            }
        };
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(std::time::Duration::from_secs(10)))
            .build();
        Ok(Self {
            base,
            token,
            agent: config.into(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// Reads a JSON answer, turning an error answer into a failure with the server's message.
    fn answer(mut response: ureq::http::Response<ureq::Body>) -> Result<Value, Failure> {
        let status = response.status();
        let body: Value = response.body_mut().read_json().unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let message = body["error"]["message"]
            .as_str()
            .unwrap_or("no message")
            .to_string();
        let error = anyhow!("the server answered {status}: {message}");
        Err(if status.is_client_error() && status.as_u16() != 429 {
            Failure::usage(error)
        } else {
            Failure::failed(error)
        })
    }

    fn transport(&self, e: ureq::Error) -> Failure {
        Failure::failed(anyhow!("cannot reach {}: {e}", self.base))
    }

    fn get_json(&self, path: &str) -> Result<Value, Failure> {
        let response = self
            .agent
            .get(self.url(path))
            .header("Authorization", self.auth())
            .call()
            .map_err(|e| self.transport(e))?;
        Self::answer(response)
    }

    fn send_json(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Value, Failure> {
        let mut request = match method {
            "POST" => self.agent.post(self.url(path)),
            _ => self.agent.put(self.url(path)),
        }
        .header("Authorization", self.auth());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = match body {
            Some(body) => request.send_json(body),
            None => request.send_empty(),
        }
        .map_err(|e| self.transport(e))?;
        Self::answer(response)
    }

    fn upload(&self, kind: &str, file: &Path, name: Option<&str>) -> Result<Value, Failure> {
        let bytes = std::fs::read(file)
            .with_context(|| format!("cannot read {}", file.display()))
            .map_err(Failure::usage)?;
        let name = match name {
            Some(name) => name.to_string(),
            None => file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        let response = self
            .agent
            .post(self.url(&format!("/v1/{kind}?name={name}")))
            .header("Authorization", self.auth())
            .send(&bytes[..])
            .map_err(|e| self.transport(e))?;
        Self::answer(response)
    }

    fn download(&self, path: &str, output: &Path) -> Result<u64, Failure> {
        let response = self
            .agent
            .get(self.url(path))
            .header("Authorization", self.auth())
            .call()
            .map_err(|e| self.transport(e))?;
        if !response.status().is_success() {
            return Self::answer(response).map(|_| 0);
        }
        // Written beside the target and renamed: an interrupted download leaves no half file.
        let tmp = output.with_extension("download.tmp");
        let mut file = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))
            .map_err(Failure::failed)?;
        let mut reader = response.into_body().into_reader();
        let bytes = std::io::copy(&mut reader, &mut file)
            .context("download interrupted")
            .map_err(Failure::failed)?;
        file.sync_all()
            .and_then(|()| std::fs::rename(&tmp, output))
            .with_context(|| format!("cannot write {}", output.display()))
            .map_err(Failure::failed)?;
        Ok(bytes)
    }

    /// Reads the job's live events after `last` until the server ends the stream.
    fn stream(&self, job: &str, last: i64, mut each: impl FnMut(Value)) -> Result<(), Failure> {
        let response = self
            .agent
            .get(self.url(&format!("/v1/jobs/{job}/events")))
            .header("Authorization", self.auth())
            .header("Accept", "text/event-stream")
            .header("Last-Event-ID", last.to_string())
            .call()
            .map_err(|e| self.transport(e))?;
        if !response.status().is_success() {
            return Self::answer(response).map(|_| ());
        }
        let reader = BufReader::new(response.into_body().into_reader());
        for line in reader.lines() {
            let line = line.map_err(|e| Failure::failed(anyhow!("stream dropped: {e}")))?;
            if let Some(data) = line.strip_prefix("data:")
                && let Ok(event) = serde_json::from_str::<Value>(data.trim())
            {
                each(event);
            }
        }
        Ok(())
    }
}

fn token_file() -> PathBuf {
    std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".config")))
        .unwrap_or_default()
        .join("trainrt")
        .join("token")
}
