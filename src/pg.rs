//! Private PostgreSQL clusters built from the system's server binaries.
//!
//! Used by the service's zero-config default (a detached cluster under the data dir), by
//! `db start|stop|url`, and by tests/benchmarks (a child server that dies with the process).
//! Servers listen on 127.0.0.1 only; the superuser password never appears in logs or errors.

use std::ffi::{CStr, CString, OsStr};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

use rand::Rng;

const SUPERUSER: &str = "postgres";
const PORT_ATTEMPTS: usize = 3;

/// Errors from locating, initialising or running a private cluster.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// No PostgreSQL server binaries were found in any searched directory.
    #[error(
        "PostgreSQL server binaries (initdb, postgres, pg_ctl) were not found (searched: {}); \
         install them (Debian/Ubuntu: `apt-get install postgresql`, or a specific version such \
         as `apt-get install postgresql-15`) or set PG_BIN to their directory, or set \
         DATABASE_URL (or [database].url in the config) to use an existing PostgreSQL server",
        join_paths(.searched)
    )]
    NotInstalled {
        /// Directories that were checked, in search order.
        searched: Vec<PathBuf>,
    },
    /// A PostgreSQL command failed.
    #[error("`{command}` failed ({status}): {output}")]
    Command {
        /// Short command name, e.g. `pg_ctl start`.
        command: String,
        /// Exit status as reported by the OS.
        status: String,
        /// Tail of the command's stderr and, where relevant, of the server log.
        output: String,
    },
    /// A filesystem or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// Anything else, e.g. no `postgres` user while running as root, or a timeout.
    #[error("{0}")]
    Other(String),
}

fn join_paths(paths: &[PathBuf]) -> String {
    let names: Vec<_> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}

/// `.ctx("create", path)` turns an io error into "cannot create <path>: <error>".
trait Ctx<T> {
    fn ctx(self, what: &str, path: &Path) -> Result<T, PgError>;
}

impl<T> Ctx<T> for io::Result<T> {
    fn ctx(self, what: &str, path: &Path) -> Result<T, PgError> {
        self.map_err(|source| PgError::Io {
            context: format!("cannot {what} {}", path.display()),
            source,
        })
    }
}

/// Where the server binaries are.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    /// Directory holding `initdb`, `postgres` and `pg_ctl`.
    pub bin_dir: PathBuf,
}

impl PgBinaries {
    /// Search order: env `PG_BIN`; `pg_config --bindir`; newest `/usr/lib/postgresql/*/bin`;
    /// the directories on `PATH`. The first one with `initdb`, `postgres` and `pg_ctl` wins.
    pub fn locate() -> Result<Self, PgError> {
        let mut candidates: Vec<PathBuf> = std::env::var_os("PG_BIN")
            .into_iter()
            .map(Into::into)
            .collect();
        let pg_config = Command::new("pg_config")
            .arg("--bindir")
            .stderr(Stdio::null())
            .output();
        if let Ok(out) = pg_config
            && out.status.success()
        {
            candidates.push(String::from_utf8_lossy(&out.stdout).trim().into());
        }
        candidates.extend(versioned_bin_dirs(Path::new("/usr/lib/postgresql")));
        let path = std::env::var_os("PATH").unwrap_or_default();
        candidates.extend(std::env::split_paths(&path));
        let mut searched: Vec<PathBuf> = Vec::new();
        for dir in candidates {
            if dir.as_os_str().is_empty() || searched.contains(&dir) {
                continue;
            }
            let has = |tool: &str| is_executable(&dir.join(tool));
            if has("initdb") && has("postgres") && has("pg_ctl") {
                return Ok(Self { bin_dir: dir });
            }
            searched.push(dir);
        }
        Err(PgError::NotInstalled { searched })
    }
}

/// `<base>/<version>/bin`, newest first (numeric, so 9.6 < 10 < 15).
fn versioned_bin_dirs(base: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(base) else {
        return vec![base.join("*/bin")];
    };
    let mut found: Vec<(Vec<u64>, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let version: Option<Vec<u64>> = name.split('.').map(|p| p.parse().ok()).collect();
            Some((version?, e.path().join("bin")))
        })
        .collect();
    found.sort_by(|a, b| b.0.cmp(&a.0));
    found.into_iter().map(|(_, p)| p).collect()
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
}

/// How a cluster is initialised and run.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// `false` for tests/throwaway clusters (`initdb --no-sync`, fsync and friends off);
    /// `true` keeps PostgreSQL's durability defaults.
    pub durable: bool,
    /// Extra `-c name=value` server settings; they override this module's defaults.
    pub settings: Vec<(String, String)>,
}

/// The unprivileged account that runs PostgreSQL when we are root (initdb/postgres refuse root).
#[derive(Debug, Clone)]
struct RunAs {
    uid: libc::uid_t,
    gid: libc::gid_t,
    home: PathBuf,
}

fn user_env(cmd: &mut Command, user: &RunAs) {
    let vars = [
        ("HOME", user.home.as_os_str()),
        ("USER", SUPERUSER.as_ref()),
    ];
    cmd.envs(vars).env("LOGNAME", SUPERUSER);
}

fn postgres_user() -> Result<RunAs, PgError> {
    let name = CString::new(SUPERUSER).expect("no NUL in a constant");
    // SAFETY: getpwnam_r writes only into `pwd` and `buf`, both owned and sized here.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut found = std::ptr::null_mut();
        let (name, len) = (name.as_ptr(), buf.len());
        let rc = libc::getpwnam_r(name, &mut pwd, buf.as_mut_ptr(), len, &mut found);
        if rc != 0 || found.is_null() {
            return Err(PgError::Other(
                "running as root, but there is no `postgres` system user to run PostgreSQL as \
                 (the postgresql package creates it); alternatively run as a non-root user"
                    .into(),
            ));
        }
        let home = OsStr::from_bytes(CStr::from_ptr(pwd.pw_dir).to_bytes()).into();
        Ok(RunAs {
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
            home,
        })
    }
}

/// Unix search permission of `uid`/`gid` over directories given as `(mode, owner, group)`.
/// Like the kernel, only the first matching class counts (an owner without `x` is refused
/// even if "other" has it). ACLs and supplementary groups are ignored.
fn can_traverse(dirs: &[(u32, u32, u32)], uid: u32, gid: u32) -> bool {
    dirs.iter().all(|&(mode, owner, group)| {
        let bit = if owner == uid {
            0o100
        } else if group == gid {
            0o010
        } else {
            0o001
        };
        mode & bit != 0
    })
}

fn ancestors_traversable(path: &Path, user: &RunAs) -> Result<bool, PgError> {
    let mut dirs = Vec::new();
    for dir in path.ancestors().skip(1) {
        let m = fs::metadata(dir).ctx("stat", dir)?;
        dirs.push((m.mode(), m.uid(), m.gid()));
    }
    Ok(can_traverse(&dirs, user.uid, user.gid))
}

/// FNV-1a: unlike `DefaultHasher` it is stable across Rust releases, and the fallback
/// directory's name must not change between runs.
fn short_hash(path: &Path) -> String {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for b in path.as_os_str().as_bytes() {
        hash = (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:012x}", hash >> 16)
}

fn random_alnum(len: usize) -> String {
    rand::rng()
        .sample_iter(&rand::distr::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// Creates `path` (not its parents) owned by `user` with exactly `mode`, whatever the umask.
fn make_dir(path: &Path, mode: u32, user: Option<&RunAs>) -> Result<(), PgError> {
    DirBuilder::new()
        .mode(mode)
        .create(path)
        .ctx("create", path)?;
    give_to(path, user, Some(mode))
}

fn give_to(path: &Path, user: Option<&RunAs>, mode: Option<u32>) -> Result<(), PgError> {
    if let Some(u) = user {
        std::os::unix::fs::chown(path, Some(u.uid), Some(u.gid)).ctx("chown", path)?;
    }
    if let Some(mode) = mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).ctx("chmod", path)?;
    }
    Ok(())
}

fn write_0600(path: &Path, data: &str, exclusive: bool) -> io::Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true).mode(0o600);
    if exclusive {
        opts.create_new(true);
    } else {
        opts.create(true).truncate(true);
    }
    opts.open(path)?.write_all(data.as_bytes())
}

/// Returns the password and whether it was created just now.
fn load_or_create_password(path: &Path) -> Result<(String, bool), PgError> {
    let password = random_alnum(32);
    match write_0600(path, &password, true) {
        Ok(()) => Ok((password, true)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let password = fs::read_to_string(path)
                .ctx("read", path)?
                .trim()
                .to_owned();
            if password.is_empty() {
                return Err(PgError::Other(format!("{} is empty", path.display())));
            }
            Ok((password, false))
        }
        Err(e) => Err(e).ctx("create", path),
    }
}

fn tail(text: &str) -> String {
    let text = text.trim();
    let mut start = text.len().saturating_sub(2000);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Server log written since `offset`, so errors show this attempt rather than older runs.
fn log_tail(path: &Path, offset: u64) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut f) = File::open(path)
        && f.seek(SeekFrom::Start(offset)).is_ok()
    {
        let _ = f.read_to_end(&mut bytes);
    }
    tail(&String::from_utf8_lossy(&bytes))
}

/// Runs `cmd`; on failure the error carries its stderr and the server log since `log`'s offset.
fn run(cmd: &mut Command, what: &str, log: Option<(&Path, u64)>) -> Result<(), PgError> {
    let out = cmd.output().ctx("run", Path::new(cmd.get_program()))?;
    if out.status.success() {
        return Ok(());
    }
    let mut output = tail(&String::from_utf8_lossy(&out.stderr));
    if let Some((path, offset)) = log {
        output = format!("{output}\nserver log:\n{}", log_tail(path, offset));
    }
    let (command, status) = (what.to_owned(), out.status.to_string());
    Err(PgError::Command {
        command,
        status,
        output,
    })
}

fn free_port() -> Result<u16, PgError> {
    let addr = Path::new("127.0.0.1:0");
    let listener = TcpListener::bind("127.0.0.1:0").ctx("bind", addr)?;
    Ok(listener.local_addr().ctx("bind", addr)?.port())
}

fn port_taken(log: &str) -> bool {
    log.contains("Address already in use")
}

fn process_alive(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks for existence/permission.
    let alive = unsafe { libc::kill(pid, 0) } == 0
        || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    // Neither a zombie (PID 1 in a container may never reap a killed server) nor a recycled
    // pid now running some other program is a live server.
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let dead = match stat.rsplit_once(") ") {
        Some((head, state)) => !head.ends_with("(postgres") || state.starts_with(['Z', 'X']),
        None => false,
    };
    alive && !dead
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `unix_socket_directories` value: PGDATA itself, or none if the path would not fit in a
/// socket address (108 bytes) or would need quoting; we only connect over TCP anyway.
fn socket_dir(pgdata: &Path) -> String {
    let s = pgdata.to_string_lossy();
    let fits = s.len() + "/.s.PGSQL.65535".len() < 108;
    if fits && !s.contains([',', '"', '\'', '\\', ' ']) {
        s.into_owned()
    } else {
        String::new()
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).into()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Serialises open/start/stop/spawn on one root across threads and processes.
fn lock_root(root: &Path) -> Result<File, PgError> {
    let path = root.join(".pg.lock");
    let f = File::options().append(true).create(true).open(&path);
    let f = f.ctx("open", &path)?;
    f.lock().ctx("lock", &path)?;
    Ok(f)
}

fn choose_pgdata(root: &Path, run_as: Option<&RunAs>) -> Result<PathBuf, PgError> {
    let preferred = root.join("pg");
    let Some(user) = run_as else {
        return Ok(preferred);
    };
    if ancestors_traversable(&preferred, user)? {
        return Ok(preferred);
    }
    let base = std::env::temp_dir().join(format!("timelines-sync-{}", short_hash(root)));
    match DirBuilder::new().mode(0o755).create(&base) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e).ctx("create", &base),
        _ => {}
    }
    // The name is predictable in a shared directory: only trust one we own.
    let m = fs::symlink_metadata(&base).ctx("stat", &base)?;
    // SAFETY: geteuid has no preconditions.
    if !m.is_dir() || m.uid() != unsafe { libc::geteuid() } {
        let msg = "exists but is not a directory owned by us";
        return Err(PgError::Other(format!("{} {msg}", base.display())));
    }
    give_to(&base, None, Some(0o755))?;
    let pgdata = base.join("pg");
    if !ancestors_traversable(&pgdata, user)? {
        return Err(PgError::Other(format!(
            "the postgres user can traverse neither {} nor {}; choose another data directory",
            root.display(),
            base.display()
        )));
    }
    tracing::warn!(
        root = %root.display(),
        pgdata = %pgdata.display(),
        "the postgres user cannot traverse the data directory; keeping the cluster under the temp dir"
    );
    Ok(pgdata)
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// PR_SET_PDEATHSIG fires when the forking *thread* exits, not the process. Forking from one
/// thread that lives as long as the process keeps a server started by a short-lived thread
/// (e.g. one test) alive for everyone else, yet still kills it when the process dies.
fn spawn_from_keeper(mut cmd: Command) -> io::Result<Child> {
    static KEEPER: OnceLock<Option<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        let thread = std::thread::Builder::new()
            .name("pg-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            });
        thread.ok().map(|_| tx)
    });
    let Some(keeper) = keeper else {
        return cmd.spawn();
    };
    let gone = || io::Error::other("the pg-spawner thread is gone");
    let (reply, answer) = mpsc::channel();
    keeper.send((cmd, reply)).map_err(|_| gone())?;
    answer.recv().map_err(|_| gone())?
}

/// Debug-printable without revealing the password.
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

enum PidState {
    Absent,
    Stale,
    NotReady,
    Ready { pid: libc::pid_t, port: u16 },
}

/// A private cluster rooted at a data directory chosen by the user (e.g. ".data").
#[derive(Debug)]
pub struct Cluster {
    bins: PgBinaries,
    root: PathBuf,
    pgdata: PathBuf,
    password: Secret,
    options: ClusterOptions,
    run_as: Option<RunAs>,
}

impl Cluster {
    /// Resolve the layout (`<root>/pg` is PGDATA, `<root>/password` the superuser password)
    /// and run `initdb` if the cluster does not exist yet. As root the server runs as
    /// `postgres`; if that user cannot traverse `<root>`, PGDATA moves to
    /// `<tmp>/timelines-sync-<hash>/pg` (with a warning) while the password stays in `<root>`.
    pub fn open(root: &Path, options: ClusterOptions) -> Result<Self, PgError> {
        let bins = PgBinaries::locate()?;
        // SAFETY: geteuid has no preconditions.
        let is_root = unsafe { libc::geteuid() } == 0;
        let run_as = if is_root {
            Some(postgres_user()?)
        } else {
            None
        };
        let root = std::path::absolute(root).ctx("resolve", root)?;
        fs::create_dir_all(&root).ctx("create", &root)?;
        let root = fs::canonicalize(&root).ctx("resolve", &root)?;
        let _lock = lock_root(&root)?;
        let password_file = root.join("password");
        let (password, new_password) = load_or_create_password(&password_file)?;
        let pgdata = choose_pgdata(&root, run_as.as_ref())?;
        let password = Secret(password);
        let cluster = Self {
            bins,
            root,
            pgdata,
            password,
            options,
            run_as,
        };
        if !cluster.pgdata.join("PG_VERSION").exists() {
            cluster.init()?;
        } else if new_password {
            let _ = fs::remove_file(&password_file);
            return Err(PgError::Other(format!(
                "the cluster in {} exists but its password file {} is gone; \
                 remove the cluster directory to re-create it",
                cluster.pgdata.display(),
                password_file.display()
            )));
        }
        Ok(cluster)
    }

    /// The PGDATA directory actually used.
    pub fn pgdata(&self) -> &Path {
        &self.pgdata
    }

    /// The port of a ready server running on this PGDATA, if any.
    pub fn running_port(&self) -> Result<Option<u16>, PgError> {
        Ok(match self.pid_state()? {
            PidState::Ready { port, .. } => Some(port),
            _ => None,
        })
    }

    /// Start a detached server (`pg_ctl start`) on a free loopback port and return the port;
    /// if one is already running on this PGDATA, return its port without starting anything
    /// (fails if that server is still starting up or shutting down).
    pub fn start(&self) -> Result<u16, PgError> {
        let _lock = lock_root(&self.root)?;
        match self.pid_state()? {
            PidState::Ready { port, .. } => return Ok(port),
            PidState::NotReady => return Err(self.busy()),
            PidState::Stale => self.clear_stale()?,
            PidState::Absent => {}
        }
        let log = self.pgdata.join("server.log");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (port, offset) = (free_port()?, file_len(&log));
            let opts: Vec<String> = self.server_args(port).iter().map(|a| sh_quote(a)).collect();
            let mut cmd = self.command("pg_ctl");
            cmd.args("start -w -t 60 -l".split(' ')).arg(&log);
            cmd.arg("-D").arg(&self.pgdata);
            cmd.arg("-o").arg(opts.join(" "));
            match run(&mut cmd, "pg_ctl start", Some((&log, offset))) {
                Ok(()) => {
                    tracing::info!(pgdata = %self.pgdata.display(), port, "started PostgreSQL");
                    return Ok(port);
                }
                Err(e) if attempt < PORT_ATTEMPTS && port_taken(&e.to_string()) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Fast shutdown (`pg_ctl stop -m fast`); `Ok(false)` if no server was running.
    pub fn stop(&self) -> Result<bool, PgError> {
        let _lock = lock_root(&self.root)?;
        match self.pid_state()? {
            PidState::Absent => return Ok(false),
            PidState::Stale => return self.clear_stale().map(|()| false),
            PidState::NotReady | PidState::Ready { .. } => {}
        }
        let mut cmd = self.command("pg_ctl");
        cmd.args("stop -m fast -w -t 60 -D".split(' '))
            .arg(&self.pgdata);
        match run(&mut cmd, "pg_ctl stop", None) {
            Ok(()) => Ok(true),
            // It went away between our check and pg_ctl's.
            Err(_) if matches!(self.pid_state()?, PidState::Absent) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Start `postgres` as a child of this process that is SIGKILLed when this process dies
    /// (even by SIGKILL), and wait until it accepts connections. For tests and benchmarks.
    /// Fails if a server is already running on this PGDATA.
    pub fn spawn_child(&self) -> Result<ChildServer, PgError> {
        let _lock = lock_root(&self.root)?;
        match self.pid_state()? {
            PidState::Ready { .. } | PidState::NotReady => return Err(self.busy()),
            PidState::Stale => self.clear_stale()?,
            PidState::Absent => {}
        }
        let log = self.pgdata.join("server.log");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (port, offset) = (free_port()?, file_len(&log));
            let child = self.spawn_postgres(port, &log)?;
            let mut server = ChildServer { child, port };
            let pid = server.child.id() as libc::pid_t;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = server.child.try_wait().ctx("wait for", &self.pgdata)? {
                    let output = format!("server log:\n{}", log_tail(&log, offset));
                    if port_taken(&output) && attempt < PORT_ATTEMPTS {
                        break;
                    }
                    let (command, status) = ("postgres".to_owned(), status.to_string());
                    return Err(PgError::Command {
                        command,
                        status,
                        output,
                    });
                }
                if matches!(self.pid_state(), Ok(PidState::Ready { pid: p, .. }) if p == pid) {
                    return Ok(server);
                }
                if Instant::now() > deadline {
                    drop(server);
                    return Err(PgError::Other(format!(
                        "postgres on {} did not become ready within 30 s; server log:\n{}",
                        self.pgdata.display(),
                        log_tail(&log, offset)
                    )));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// `postgres://postgres:<password>@127.0.0.1:<port>/<database>`, percent-encoded.
    pub fn url(&self, port: u16, database: &str) -> String {
        let (password, db) = (percent_encode(&self.password.0), percent_encode(database));
        format!("postgres://{SUPERUSER}:{password}@127.0.0.1:{port}/{db}")
    }

    fn busy(&self) -> PgError {
        PgError::Other(format!(
            "another server on {} is running, starting or stopping",
            self.pgdata.display()
        ))
    }

    fn command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.bins.bin_dir.join(tool));
        // The caller's cwd (e.g. /root) may be unreadable for the postgres user.
        cmd.current_dir("/").stdin(Stdio::null());
        if let Some(u) = &self.run_as {
            cmd.uid(u.uid).gid(u.gid);
            user_env(&mut cmd, u);
        }
        cmd
    }

    fn server_args(&self, port: u16) -> Vec<String> {
        let mut settings: Vec<(String, String)> = [
            ("listen_addresses", "127.0.0.1".to_owned()),
            ("unix_socket_directories", socket_dir(&self.pgdata)),
            ("max_connections", "200".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        if !self.options.durable {
            for name in ["fsync", "synchronous_commit", "full_page_writes"] {
                settings.push((name.into(), "off".into()));
            }
        }
        // Later `-c` settings win, so the caller's override the defaults above.
        settings.extend(self.options.settings.iter().cloned());
        let mut args = vec!["-p".to_owned(), port.to_string()];
        for (name, value) in settings {
            args.extend(["-c".to_owned(), format!("{name}={value}")]);
        }
        args
    }

    fn init(&self) -> Result<(), PgError> {
        let parent = self.pgdata.parent().unwrap_or(Path::new("/"));
        // initdb into a staging dir and rename, so a crash mid-initdb never leaves a
        // half-built PGDATA that later looks like an existing cluster.
        let staging = parent.join("pg.init");
        // The password reaches initdb via a file the postgres user can read, never argv.
        let pwfile = RemoveOnDrop(parent.join(format!(".pwfile-{}", std::process::id())));
        write_0600(&pwfile.0, &self.password.0, false).ctx("write", &pwfile.0)?;
        give_to(&pwfile.0, self.run_as.as_ref(), None)?;
        tracing::info!(pgdata = %self.pgdata.display(), "initialising a PostgreSQL cluster");
        for locale in ["C.UTF-8", "C"] {
            if let Err(e) = fs::remove_dir_all(&staging)
                && e.kind() != io::ErrorKind::NotFound
            {
                return Err(e).ctx("remove", &staging);
            }
            make_dir(&staging, 0o700, self.run_as.as_ref())?;
            let mut cmd = self.command("initdb");
            cmd.args("-U postgres --auth=scram-sha-256 -E UTF8 -D".split(' '));
            cmd.arg(&staging).arg(format!("--locale={locale}"));
            cmd.arg(format!("--pwfile={}", pwfile.0.display()));
            if !self.options.durable {
                cmd.arg("--no-sync");
            }
            match run(&mut cmd, "initdb", None) {
                Ok(()) => return fs::rename(&staging, &self.pgdata).ctx("create", &self.pgdata),
                Err(PgError::Command { output, .. })
                    if locale != "C" && output.contains("locale") =>
                {
                    tracing::debug!("initdb rejected locale {locale}: {output}");
                }
                Err(e) => {
                    let _ = fs::remove_dir_all(&staging);
                    return Err(e);
                }
            }
        }
        unreachable!("the last locale attempt always returns")
    }

    fn pid_state(&self) -> Result<PidState, PgError> {
        let path = self.pgdata.join("postmaster.pid");
        let text = match fs::read_to_string(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(PidState::Absent),
            other => other.ctx("read", &path)?,
        };
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        // An unparsable pid means the server is still writing the file.
        let pid = lines.first().and_then(|l| l.parse().ok());
        let Some(pid) = pid.filter(|p| *p > 0) else {
            return Ok(PidState::NotReady);
        };
        if !process_alive(pid) {
            return Ok(PidState::Stale);
        }
        let port = lines.get(3).and_then(|l| l.parse().ok());
        Ok(match (port, lines.get(7)) {
            (Some(port), Some(&"ready")) => PidState::Ready { pid, port },
            _ => PidState::NotReady,
        })
    }

    fn clear_stale(&self) -> Result<(), PgError> {
        let path = self.pgdata.join("postmaster.pid");
        tracing::warn!(path = %path.display(), "removing the pid file of a server that is gone");
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e).ctx("remove", &path),
            _ => Ok(()),
        }
    }

    fn spawn_postgres(&self, port: u16, log: &Path) -> Result<Child, PgError> {
        let out = File::options().create(true).append(true).open(log);
        let out = out.ctx("open", log)?;
        // A later `pg_ctl start -l` running as postgres must be able to append to it.
        give_to(log, self.run_as.as_ref(), None)?;
        let err = out.try_clone().ctx("open", log)?;
        let mut cmd = Command::new(self.bins.bin_dir.join("postgres"));
        cmd.arg("-D").arg(&self.pgdata).args(self.server_args(port));
        cmd.current_dir("/").stdin(Stdio::null());
        cmd.stdout(out).stderr(err);
        let ids = self.run_as.as_ref().map(|u| {
            user_env(&mut cmd, u);
            (u.uid, u.gid)
        });
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe libc calls and no allocation between fork and exec.
        // Credentials are changed here, before prctl, because a credential change clears
        // PDEATHSIG (so CommandExt::uid, applied after pre_exec, would undo it).
        unsafe {
            cmd.pre_exec(move || {
                if let Some((uid, gid)) = ids
                    && (libc::setgroups(1, &gid) != 0
                        || libc::setgid(gid) != 0
                        || libc::setuid(uid) != 0)
                {
                    return Err(io::Error::last_os_error());
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent died before prctl took effect: nobody would ever stop us.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        spawn_from_keeper(cmd).ctx("start", &self.bins.bin_dir.join("postgres"))
    }
}

/// Removes a file when dropped (the initdb password file must not linger).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// A server running as a child of this process; stopped on drop.
#[derive(Debug)]
pub struct ChildServer {
    child: Child,
    port: u16,
}

impl ChildServer {
    /// The loopback TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Fast shutdown: SIGINT, wait up to 10 s, then SIGKILL. Idempotent.
    pub fn stop(&mut self) {
        let running = |c: &mut Child| matches!(c.try_wait(), Ok(None));
        if !running(&mut self.child) {
            return;
        }
        // SAFETY: plain signal delivery to our own, not yet reaped, child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !running(&mut self.child) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::warn!(
            port = self.port,
            "postgres ignored SIGINT for 10 s; killing it"
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A temporary cluster root, removed with everything in it on drop. Keep it alive
/// longer than any server running on the cluster inside it.
#[derive(Debug)]
pub struct TempRoot(PathBuf);

impl TempRoot {
    /// The root directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A fresh cluster under `<tmp>/timelines-sync-test-<random>` (mode 0755, so the postgres
/// user can traverse it when we are root), for tests and benchmarks.
pub fn throwaway(options: ClusterOptions) -> Result<(TempRoot, Cluster), PgError> {
    let path = std::env::temp_dir().join(format!("timelines-sync-test-{}", random_alnum(10)));
    make_dir(&path, 0o755, None)?;
    let root = TempRoot(path);
    let cluster = Cluster::open(root.path(), options)?;
    Ok((root, cluster))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;

    fn fast() -> ClusterOptions {
        ClusterOptions {
            durable: false,
            settings: vec![],
        }
    }

    fn connects(port: u16) -> bool {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    }

    #[test]
    fn locate_finds_installed_binaries() {
        let bins = PgBinaries::locate().expect("postgres binaries");
        for tool in ["initdb", "postgres", "pg_ctl"] {
            assert!(
                is_executable(&bins.bin_dir.join(tool)),
                "{tool} in {:?}",
                bins.bin_dir
            );
        }
    }

    #[test]
    fn pure_helpers() {
        let (uid, gid) = (101, 104);
        let (slash, tmp, root_home) = ((0o40755, 0, 0), (0o41777, 0, 0), (0o40700, 0, 0));
        assert!(can_traverse(&[tmp, slash], uid, gid));
        assert!(!can_traverse(&[root_home, slash], uid, gid));
        assert!(can_traverse(&[(0o40710, 0, gid)], uid, gid));
        // Only the first matching class counts.
        assert!(!can_traverse(&[(0o40611, uid, 0)], uid, gid));
        assert!(!can_traverse(&[(0o40661, 0, gid)], uid, gid));
        assert_eq!(percent_encode("aZ9-._~"), "aZ9-._~");
        assert_eq!(percent_encode("a b/@:"), "a%20b%2F%40%3A");
        assert_eq!(short_hash(Path::new("/x")).len(), 12);
        assert_ne!(short_hash(Path::new("/x")), short_hash(Path::new("/y")));
        let msg = PgError::NotInstalled {
            searched: vec!["/a".into(), "/b".into()],
        }
        .to_string();
        assert!(
            msg.contains("/a, /b") && msg.contains("apt-get install postgresql"),
            "{msg}"
        );
        assert!(
            msg.contains("DATABASE_URL") && msg.contains("[database].url"),
            "{msg}"
        );
    }

    #[test]
    fn child_server_accepts_connections_and_stops() {
        let (_root, cluster) = throwaway(fast()).unwrap();
        let mut server = cluster.spawn_child().unwrap();
        let port = server.port();
        assert!(connects(port));
        assert_eq!(cluster.running_port().unwrap(), Some(port));
        assert!(cluster.spawn_child().is_err(), "one server per PGDATA");
        let url = cluster.url(port, "postgres");
        assert!(url.starts_with("postgres://postgres:"));
        assert!(url.ends_with(&format!("@127.0.0.1:{port}/postgres")));
        server.stop();
        server.stop();
        assert_eq!(cluster.running_port().unwrap(), None);
        assert!(!connects(port));
    }

    #[test]
    fn detached_start_reuse_stop() {
        let (root, cluster) = throwaway(fast()).unwrap();
        assert_eq!(cluster.pgdata(), root.path().join("pg"));
        let mode = fs::metadata(root.path().join("password")).unwrap().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!cluster.stop().unwrap());
        // A pid that cannot exist (pid_max is at most 2^22) stands for a killed server.
        let pid_file = cluster.pgdata().join("postmaster.pid");
        fs::write(&pid_file, "2147483646\n/x\n0\n5432\n\n\n\nready\n").unwrap();
        assert_eq!(cluster.running_port().unwrap(), None);
        let port = cluster.start().unwrap();
        assert!(connects(port));
        assert_eq!(cluster.running_port().unwrap(), Some(port));
        // A second handle on the same root reuses the password and the running server.
        let again = Cluster::open(root.path(), fast()).unwrap();
        assert_eq!(again.start().unwrap(), port);
        assert_eq!(again.url(port, "x"), cluster.url(port, "x"));
        assert!(cluster.stop().unwrap());
        assert!(!again.stop().unwrap());
        assert_eq!(cluster.running_port().unwrap(), None);
    }

    #[test]
    fn untraversable_root_falls_back_to_temp_dir() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let root = dir.path().join("data");
        let cluster = Cluster::open(&root, fast()).unwrap();
        let _cleanup = TempRoot(cluster.pgdata().parent().unwrap().to_owned());
        let tmp = std::env::temp_dir().join("timelines-sync-");
        assert!(
            cluster
                .pgdata()
                .to_string_lossy()
                .starts_with(&*tmp.to_string_lossy())
        );
        assert!(root.join("password").exists());
        let m = fs::metadata(cluster.pgdata()).unwrap();
        assert_eq!(
            (m.mode() & 0o777, m.uid()),
            (0o700, postgres_user().unwrap().uid)
        );
        let server = cluster.spawn_child().unwrap();
        assert!(connects(server.port()));
    }
}
