//! The binary itself: configuration errors, `migrate`, `status`, `run` and the embedded cluster.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::helpers::{test_db, wait_for_state};

pub(crate) fn binary() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_timelines-sync"));
    for var in [
        "DATABASE_URL",
        "TIMELINES_SYNC_CONFIG",
        "TIMELINES_API_URL",
        "TIMELINES_API_TOKEN",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    // Tests run side by side: each service listens on a free port.
    cmd.env("TIMELINES_SYNC_HTTP_LISTEN", "127.0.0.1:0");
    cmd
}

pub(crate) fn output(cmd: &mut Command) -> (Output, String, String) {
    let out = cmd.output().expect("running the binary");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

pub(crate) fn write_config(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("timelines-sync.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn a_bad_config_file_stops_start_up_with_the_key_and_the_reason() {
    let (_dir, path) = write_config("[dispatcher]\nconcurrency = 0\n");
    let (out, _, stderr) = output(binary().arg("--config").arg(&path).arg("status"));
    assert!(!out.status.success());
    assert!(
        stderr.contains("config key `dispatcher.concurrency`: must be between 1 and 10000, got 0"),
        "{stderr}"
    );

    let (_dir, path) =
        write_config("[workspaces.default]\ntoken = \"sekret-token-123\"\nrate_limit = 5\n");
    let (out, _, stderr) = output(binary().arg("--config").arg(&path).arg("status"));
    assert!(!out.status.success());
    assert!(stderr.contains("rate_limit"), "{stderr}");
    assert!(
        !stderr.contains("sekret-token-123"),
        "the token leaked: {stderr}"
    );
}

#[test]
fn the_config_path_can_come_from_the_environment() {
    let (_dir, path) = write_config("[log]\nformat = \"xml\"\n");
    let (out, _, stderr) = output(binary().env("TIMELINES_SYNC_CONFIG", &path).arg("status"));
    assert!(!out.status.success());
    assert!(
        stderr.contains(&path.display().to_string()) && stderr.contains("xml"),
        "{stderr}"
    );
}

#[tokio::test]
async fn migrate_and_status_work_against_a_database_url() {
    let db = test_db().await;
    // Several instances migrating at once serialise on sqlx's advisory lock.
    let runs: Vec<_> = (0..3)
        .map(|_| {
            binary()
                .env("DATABASE_URL", &db.url)
                .arg("migrate")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for run in runs {
        let out = run.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    sqlx::query("SELECT timelines.enqueue('noop', '{}') FROM generate_series(1, 3)")
        .execute(&db.pool)
        .await
        .unwrap();
    let (out, stdout, stderr) = output(binary().env("DATABASE_URL", &db.url).arg("status"));
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("default") && stdout.contains("noop") && stdout.contains("queued"),
        "{stdout}"
    );
    assert!(
        stdout.lines().any(|l| l.trim_end().ends_with(" 3")),
        "{stdout}"
    );
    assert!(stdout.contains("oldest queued job: "), "{stdout}");
    assert!(
        stdout.contains("limit/min")
            && stdout
                .lines()
                .any(|l| l.starts_with("default") && l.contains(" 50 ")),
        "{stdout}"
    );
}

#[tokio::test]
async fn with_a_database_but_no_token_run_refuses_to_start_rather_than_simulate() {
    let db = test_db().await;
    let (out, _, stderr) = output(binary().env("DATABASE_URL", &db.url).arg("run"));
    assert!(!out.status.success());
    assert!(
        stderr.contains("workspaces.default.token") && stderr.contains("simulator = true"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_simulated_workspace_sends_through_the_built_in_simulator_and_stops_on_sigterm() {
    let db = test_db().await;
    let (_dir, path) = write_config("[workspaces.default]\nsimulator = true\n");
    let child = binary()
        .env("DATABASE_URL", &db.url)
        .arg("--config")
        .arg(&path)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let id: i64 = sqlx::query_scalar("SELECT timelines.enqueue('send_message', '{\"phone\": \"+14155550123\", \"text\": \"hi\"}')")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let row = crate::helpers::wait_for_job(&db.pool, id, "succeeded").await;
    assert!(row["result"]["message_uid"].is_string(), "{row}");
    let simulated: bool =
        sqlx::query_scalar("SELECT simulated FROM timelines.workspaces WHERE name = 'default'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(simulated);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(stderr.contains("built-in simulator"), "{stderr}");
    assert!(
        stderr.contains("shutdown requested") && stderr.contains("worker stopped"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_killed_service_leaves_its_job_to_be_rescued_as_interrupted() {
    let db = test_db().await;
    let id: i64 = sqlx::query_scalar("SELECT timelines.enqueue('noop', '{\"sleep_ms\": 600000}')")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let (_dir, path) = write_config(
        "[workspaces.default]\nsimulator = true\n[dispatcher]\nlease_seconds = 3\n\
         [maintenance]\nrescue_interval_seconds = 1\n",
    );
    let mut doomed = binary()
        .env("DATABASE_URL", &db.url)
        .arg("--config")
        .arg(&path)
        .arg("run")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_state(&db.pool, "running", 1).await;
    doomed.kill().unwrap();
    doomed.wait().unwrap();
    // A second instance rescues the job once the lease runs out (about 3-4 s).
    let mut rescuer = binary()
        .env("DATABASE_URL", &db.url)
        .arg("--config")
        .arg(&path)
        .arg("run")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let row = loop {
        let row = crate::helpers::job_row(&db.pool, id).await;
        if row["interrupted"] == true && row["attempts"] == 2 {
            break row;
        }
        assert!(std::time::Instant::now() < deadline, "not rescued: {row}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    rescuer.kill().unwrap();
    rescuer.wait().unwrap();
    assert_eq!(row["state"], "running");
    assert!(
        row["last_error"].as_str().unwrap().contains("interrupted"),
        "{row}"
    );
}

/// A temporary directory the `postgres` user can traverse (an embedded cluster goes inside).
fn cluster_dir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    dir
}

#[test]
fn the_embedded_cluster_starts_serves_and_stops_without_any_database_url() {
    let dir = cluster_dir("timelines-sync-embedded-");
    let data_dir = dir.path().join("data");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\ndata_dir = {:?}\n",
            data_dir.display().to_string()
        ),
    )
    .unwrap();
    let cli = |args: &[&str]| output(binary().arg("--config").arg(&config).args(args));

    let (out, _, stderr) = cli(&["db", "url"]);
    assert!(
        !out.status.success() && stderr.contains("not running"),
        "{stderr}"
    );
    let (out, stdout, stderr) = cli(&["db", "start"]);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("postgres://postgres:"), "{stdout}");
    let (out, url, _) = cli(&["db", "url"]);
    assert!(out.status.success());
    assert!(
        url.trim().starts_with("postgres://postgres:") && url.contains("@127.0.0.1:"),
        "{url}"
    );
    // `status` reuses the running cluster and leaves it running.
    let (out, stdout, stderr) = cli(&["status"]);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("no jobs"), "{stdout}");
    let (out, again, _) = cli(&["db", "url"]);
    assert!(out.status.success());
    assert_eq!(again, url);
    let (out, stdout, _) = cli(&["db", "stop"]);
    assert!(
        out.status.success() && stdout.contains("stopped"),
        "{stdout}"
    );
    // Without a running cluster, `status` starts one and stops it again when done.
    let (out, _, stderr) = cli(&["status"]);
    assert!(out.status.success(), "{stderr}");
    let (out, _, _) = cli(&["db", "url"]);
    assert!(!out.status.success(), "status left its own cluster running");
}

#[test]
fn the_demo_runs_the_whole_flow_and_leaves_other_workspaces_alone() {
    let dir = cluster_dir("timelines-sync-demo-");
    let config = dir.path().join("c.toml");
    let data_dir = dir.path().join("data").display().to_string();
    std::fs::write(&config, format!("[database]\ndata_dir = {data_dir:?}\n")).unwrap();
    let (out, stdout, stderr) = output(binary().arg("--config").arg(&config).arg("demo"));
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("A malformed job is refused at insert time"),
        "{stdout}"
    );
    let succeeded = stdout.lines().filter(|l| l.contains(" succeeded ")).count();
    let failed = stdout.lines().filter(|l| l.contains(" failed ")).count();
    assert_eq!((succeeded, failed), (11, 1), "{stdout}");
    assert!(stdout.contains("API requests were made"), "{stdout}");
    let (out, _, _) = output(binary().arg("--config").arg(&config).args(["db", "url"]));
    assert!(!out.status.success(), "the demo left its cluster running");
}

#[tokio::test]
async fn poll_dry_run_prints_the_jobs_and_writes_nothing_then_poll_creates_them() {
    let db = test_db().await;
    sqlx::raw_sql(
        "CREATE TABLE public.leads (id int PRIMARY KEY, name text, phone text, updated_at timestamptz NOT NULL);
         INSERT INTO public.leads VALUES (1, 'Ana', '+34 600 000 001', now() - interval '5 minutes'),
                                         (2, 'Bo', 'n/a', now() - interval '5 minutes');",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let (_dir, path) = write_config(&format!(
        r#"
[database]
url = "{url}"
[workspaces.default]
token = "tl-secret-token"
[sources.leads]
sql = "SELECT * FROM public.leads WHERE updated_at >= $1 AND updated_at < $2"
cursor_field = "updated_at"
id_field = "id"
phone_fields = ["phone"]
initial = "{start}"
settle_seconds = 0
[[rules]]
source = "leads"
trigger = "updated"
template = "Hi {{{{ name }}}}"
"#,
        url = db.url,
        start = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339()
    ));
    let jobs = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM timelines.jobs")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let (out, stdout, stderr) =
        output(
            binary()
                .arg("--config")
                .arg(&path)
                .args(["poll", "leads", "--dry-run"]),
        );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("DRY RUN") && stdout.contains("would enqueue send_message"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Hi Ana") && stdout.contains("invalid_phone: 1"),
        "{stdout}"
    );
    assert_eq!(jobs(db.pool.clone()).await, 0);

    let (out, stdout, stderr) = output(binary().arg("--config").arg(&path).args(["poll", "leads"]));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("1 jobs created"), "{stdout}");
    assert_eq!(jobs(db.pool.clone()).await, 1);

    let (out, _, stderr) = output(binary().arg("--config").arg(&path).args(["poll", "nope"]));
    assert!(!out.status.success());
    assert!(
        stderr.contains("no source called \"nope\"") && stderr.contains("leads"),
        "{stderr}"
    );
    let (out, _, stderr) = output(binary().arg("--config").arg(&path).args([
        "backfill",
        "leads",
        "--since",
        "yesterday",
    ]));
    assert!(!out.status.success());
    assert!(stderr.contains("yesterday"), "{stderr}");
}
