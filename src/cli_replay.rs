//! `poolhub replay`: the stored outcome history scored again under a candidate
//! configuration, against the running one, and how the rankings would change.

use clap::Args;
use poolhub::admin_client::{AdminClient, ClientError};
use poolhub::config::Config;
use poolhub::domain::replay::Report;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct ReplayArgs {
    /// The candidate configuration (a poolhub.toml): its weights, thresholds, decay and
    /// priors are what is tried.
    #[arg(long, short)]
    config: PathBuf,
    /// The configuration to compare against (default: the built-in defaults). Not used with
    /// --hub, where the hub's running configuration is.
    #[arg(long)]
    current: Option<PathBuf>,
    /// A stopped hub's redb file (a running hub holds its file's lock: use --hub).
    #[arg(long, conflicts_with_all = ["database_url", "hub"])]
    data: Option<PathBuf>,
    /// A PostgreSQL store (works while hubs run).
    #[arg(long, conflicts_with = "hub")]
    database_url: Option<String>,
    /// The PostgreSQL schema (storage.postgres_schema).
    #[arg(long, default_value = "poolhub")]
    schema: String,
    /// A running hub: it replays its own store (POST /api/v1/admin/replay, with the admin
    /// secret or an admin key in POOLHUB_ADMIN_TOKEN).
    #[arg(long)]
    hub: Option<String>,
    /// The size of the top group whose overlap is reported.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// List every miner, not only those whose rank or threshold verdict changes.
    #[arg(long)]
    all: bool,
}

fn config_file(path: &PathBuf) -> Result<Config, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    poolhub::hub::candidate_from_toml(&text)
        .map_err(|e| format!("{}: {}", path.display(), e.message))
}

fn print(r: &Report, all: bool) {
    println!(
        "{} miners, {} outcomes replayed; top {} overlap: {} of {}",
        r.miners,
        r.outcomes,
        r.top,
        r.top_overlap,
        r.top.min(r.miners)
    );
    println!(
        "{:<42}  {:>8}  {:>8}  {:>6}  {:>9}  {:>9}  THRESHOLDS",
        "ADDRESS", "RANK NOW", "RANK NEW", "MOVE", "SCORE NOW", "SCORE NEW"
    );
    let verdict = |p: bool| if p { "pass" } else { "fail" };
    let mut shown = 0;
    for c in &r.changes {
        let moved = c.rank_change != 0 || c.current.passes != c.candidate.passes;
        if !all && !moved {
            continue;
        }
        shown += 1;
        println!(
            "{:<42}  {:>8}  {:>8}  {:>+6}  {:>9.4}  {:>9.4}  {} -> {}",
            c.address.to_string(),
            c.current.rank,
            c.candidate.rank,
            c.rank_change,
            c.current.score,
            c.candidate.score,
            verdict(c.current.passes),
            verdict(c.candidate.passes)
        );
    }
    if shown == 0 {
        println!("(no miner changes rank or threshold verdict)");
    }
    let list = |v: &[poolhub::domain::Address]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    println!("newly pass the thresholds: {}", list(&r.newly_pass));
    println!("newly fail the thresholds: {}", list(&r.newly_fail));
}

pub fn run(
    args: &ReplayArgs,
    connect: fn(&str, String) -> Result<AdminClient, ClientError>,
) -> ExitCode {
    let fail = |m: String| {
        eprintln!("poolhub: replay: {m}");
        ExitCode::FAILURE
    };
    let candidate = match config_file(&args.config) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start a runtime: {e}")),
    };
    let report: Report = if let Some(hub) = &args.hub {
        let token = std::env::var("POOLHUB_ADMIN_TOKEN").unwrap_or_default();
        let client = match connect(hub, token.trim().to_string()) {
            Ok(c) => c,
            Err(e) => return fail(e.to_string()),
        };
        let text = match std::fs::read_to_string(&args.config) {
            Ok(t) => t,
            Err(e) => return fail(format!("{}: {e}", args.config.display())),
        };
        let body = json!({"config": text, "top": args.top});
        let answer = match rt.block_on(client.call(
            hyper::Method::POST,
            "/api/v1/admin/replay",
            Some(&body),
        )) {
            Ok(a) => a,
            Err(e) => return fail(e.to_string()),
        };
        if !answer.status.is_success() {
            let why = answer.body["error"]["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| answer.body.to_string());
            return fail(format!("the hub answered {}: {why}", answer.status));
        }
        if args.json {
            println!("{}", answer.body);
            return ExitCode::SUCCESS;
        }
        match serde_json::from_value::<Report>(answer.body) {
            Ok(r) => r,
            Err(e) => return fail(format!("unexpected answer: {e}")),
        }
    } else {
        let current = match &args.current {
            Some(p) => match config_file(p) {
                Ok(c) => c,
                Err(e) => return fail(e),
            },
            None => Config::default(),
        };
        let location = match (&args.data, &args.database_url) {
            (Some(d), None) => d.display().to_string(),
            (None, Some(u)) => u.clone(),
            _ => return fail("give --data FILE, --database-url URL or --hub URL".into()),
        };
        let work = async {
            let store = poolhub::store::migrate::open(&location, &args.schema, true)
                .await
                .map_err(|e| poolhub::store::error_chain(&e))?;
            let r = poolhub::hub::replay_store(
                store.as_ref(),
                current.scoring_params(),
                candidate.scoring_params(),
                args.top.max(1),
            )
            .await
            .map_err(|e| e.detail());
            store.close().await;
            r
        };
        match rt.block_on(work) {
            Ok(r) => r,
            Err(e) => return fail(e),
        }
    };
    if args.json {
        match serde_json::to_string(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => return fail(e.to_string()),
        }
    } else {
        print(&report, args.all);
    }
    ExitCode::SUCCESS
}
