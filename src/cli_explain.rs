//! `poolhub explain`: "why not my miner?" from the command line, through a running hub's
//! `POST /api/v1/match/explain`.

use clap::Args;
use poolhub::admin_client::{AdminClient, ClientError};
use serde_json::{json, Value};
use std::process::ExitCode;

#[derive(Args)]
pub struct ExplainArgs {
    /// The hub's API base URL.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    hub: String,
    /// The model the job needs.
    #[arg(long)]
    model: String,
    /// The job type (the hub's default is "inference").
    #[arg(long)]
    job_type: Option<String>,
    /// GPU memory the job needs, MiB.
    #[arg(long)]
    min_gpu_memory: Option<u64>,
    /// Longest acceptable estimated time, ms.
    #[arg(long)]
    max_latency: Option<f64>,
    /// How many miners the match would offer.
    #[arg(long)]
    limit: Option<usize>,
    /// Explain this miner only.
    #[arg(long)]
    address: Option<String>,
    /// Print the hub's JSON answer instead of a table.
    #[arg(long)]
    json: bool,
}

/// The figures behind a reason, as `key=value` pairs (the code and address aside).
fn details(m: &Value) -> String {
    let Some(obj) = m.as_object() else {
        return String::new();
    };
    obj.iter()
        .filter(|(k, _)| *k != "address" && *k != "reason")
        .map(|(k, v)| match v {
            Value::Null => format!("{k}=none"),
            Value::Number(n) => match n.as_f64() {
                Some(f) if f.fract() != 0.0 => format!("{k}={f:.4}"),
                _ => format!("{k}={n}"),
            },
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn run(
    args: &ExplainArgs,
    connect: fn(&str, String) -> Result<AdminClient, ClientError>,
) -> ExitCode {
    // Open hubs need no key; a hub with auth.clients = "keys" needs a client or admin key.
    let token = std::env::var("POOLHUB_CLIENT_KEY")
        .or_else(|_| std::env::var("POOLHUB_ADMIN_TOKEN"))
        .map(|t| t.trim().to_string())
        .unwrap_or_default();
    let client = match connect(&args.hub, token) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("poolhub: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut body = json!({"model": args.model, "requirements": {}});
    if let Some(j) = &args.job_type {
        body["job_type"] = json!(j);
    }
    if let Some(m) = args.min_gpu_memory {
        body["requirements"]["min_gpu_memory"] = json!(m);
    }
    if let Some(l) = args.max_latency {
        body["requirements"]["max_latency"] = json!(l);
    }
    if let Some(l) = args.limit {
        body["limit"] = json!(l);
    }
    if let Some(a) = &args.address {
        body["address"] = json!(a);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("poolhub: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let answer =
        match rt.block_on(client.call(hyper::Method::POST, "/api/v1/match/explain", Some(&body))) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("poolhub: {e}");
                return ExitCode::FAILURE;
            }
        };
    if !answer.status.is_success() {
        let why = answer.body["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| answer.body.to_string());
        eprintln!("poolhub: the hub answered {}: {why}", answer.status);
        return ExitCode::FAILURE;
    }
    if args.json {
        println!("{}", answer.body);
        return ExitCode::SUCCESS;
    }
    let empty = Vec::new();
    let miners = answer.body["miners"].as_array().unwrap_or(&empty);
    println!("{:<42}  {:<12}  DETAIL", "ADDRESS", "REASON");
    for m in miners {
        println!(
            "{:<42}  {:<12}  {}",
            m["address"].as_str().unwrap_or("?"),
            m["reason"].as_str().unwrap_or("?"),
            details(m)
        );
    }
    let offered = answer.body["offered"].as_array().map_or(0, Vec::len);
    let mut tail = format!("{} miner(s) explained, {offered} offered", miners.len());
    if answer.body["panic"] == true {
        tail.push_str(", panic mode (cooled-down miners ranked too)");
    }
    if answer.body["truncated"] == true {
        tail.push_str(", list truncated: give --address to explain one miner");
    }
    println!("{tail}");
    ExitCode::SUCCESS
}
