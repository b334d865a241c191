//! A real PostgreSQL 15 for the tests: one cluster per test binary (`initdb` takes over a
//! second), started on first use on a free loopback port, and a fresh database per test.
//! The server dies with the test process (parent-death signal), so a failing or killed test
//! run leaves no server behind; its directory is removed by the next run. Self-contained:
//! `engine/benches/store.rs` uses it too.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = "/usr/lib/postgresql/15/bin";

struct Cluster {
    port: u16,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
/// A second cluster that accepts TLS connections only, with its CA.
static TLS_CLUSTER: OnceLock<(Cluster, PathBuf)> = OnceLock::new();

fn bin(name: &str) -> PathBuf {
    let p = Path::new(BIN).join(name);
    assert!(
        p.is_file(),
        "`{}` is not installed: install the Debian package `postgresql` (scripts/test does: apt-get install postgresql)",
        p.display()
    );
    p
}

fn is_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() == 0 }
}

/// `setpriv` to run as `postgres` when root (PostgreSQL refuses to run as root).
fn as_postgres(program: &Path) -> Command {
    let mut c = Command::new("setpriv");
    if is_root() {
        c.args([
            "--reuid",
            "postgres",
            "--regid",
            "postgres",
            "--init-groups",
        ]);
    }
    c.args(["--pdeathsig", "KILL"]).arg(program);
    c
}

/// Directories of earlier test processes that are gone.
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name
            .strip_prefix("medic-pg-")
            .and_then(|p| p.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        {
            // SAFETY: signal 0 only checks whether the process exists.
            if unsafe { libc::kill(pid, 0) } != 0 {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is needed (Debian package `openssl`)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1 signed by it, in `dir`.
pub fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "1",
            "-subj",
            "/CN=medic test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.crt",
        ],
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
}

fn start(name: &str, tls: bool) -> Cluster {
    remove_stale();
    let dir = std::env::temp_dir().join(format!("medic-pg-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    if tls {
        certificates(&dir);
    }
    if is_root() {
        let ok = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "chown postgres {}", dir.display());
    }
    let data = dir.join("data");
    let out = as_postgres(&bin("initdb"))
        .arg("-D")
        .arg(&data)
        .args(["-A", "trust", "-U", "medic", "--no-sync"])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut settings = vec![
        "listen_addresses=127.0.0.1".to_owned(),
        "max_connections=300".to_owned(),
    ];
    if tls {
        // TCP connections without TLS are refused, so a test that connects used it.
        let hba = data.join("pg_hba.conf");
        let text = std::fs::read_to_string(&hba).unwrap();
        let text: String = text
            .lines()
            .map(|l| match l.strip_prefix("host ") {
                Some(rest) => format!("hostssl {rest}\n"),
                None => format!("{l}\n"),
            })
            .collect();
        std::fs::write(&hba, text).unwrap();
        settings.push("ssl=on".into());
        settings.push(format!(
            "ssl_cert_file={}",
            dir.join("server.crt").display()
        ));
        settings.push(format!("ssl_key_file={}", dir.join("server.key").display()));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::fs::File::create(dir.join("postgres.log")).unwrap();
    let mut cmd = as_postgres(&bin("postgres"));
    cmd.arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string(), "-k"])
        .arg(&dir)
        .args(settings.iter().flat_map(|s| ["-c", s.as_str()]))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // The parent-death signal fires when the thread that started the server ends, so a
    // thread that lives as long as the test process starts it and waits on it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let child = cmd.spawn();
        match child {
            Ok(mut child) => {
                let _ = tx.send(Ok(()));
                let status = child.wait();
                eprintln!("pglab: PostgreSQL exited: {status:?}");
            }
            Err(e) => {
                let _ = tx.send(Err(e.to_string()));
            }
        }
        // Keep the parent thread alive: the server must not outlive it, nor die before.
        loop {
            std::thread::park();
        }
    });
    rx.recv().unwrap().expect("cannot start postgres");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if psql(port, "postgres", "SELECT 1").is_ok() {
            return Cluster { port };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "PostgreSQL was not ready on 127.0.0.1:{port} within 20 s: {}",
        std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default()
    );
}

/// Runs one SQL command with `psql` (no client library: tests calling this may be inside an
/// async runtime, where the synchronous client must not run).
pub fn psql(port: u16, db: &str, sql: &str) -> Result<String, String> {
    let out = Command::new(bin("psql"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "medic"])
        .args(["-d", db, "-v", "ON_ERROR_STOP=1", "-tA", "-c", sql])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A fresh, empty database on the shared cluster: its `postgres://` URL.
pub fn database() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let port = CLUSTER.get_or_init(|| start("plain", false)).port;
    let name = format!("t{}", N.fetch_add(1, Ordering::Relaxed));
    psql(port, "postgres", &format!("CREATE DATABASE {name}")).unwrap();
    format!("postgres://medic@127.0.0.1:{port}/{name}")
}

/// A fresh database on a cluster that takes TLS connections only, with a certificate for
/// 127.0.0.1: its URL (asking for TLS) and the CA's certificate (PEM).
pub fn tls_database() -> (String, PathBuf) {
    static N: AtomicU32 = AtomicU32::new(0);
    let (cluster, ca) = TLS_CLUSTER.get_or_init(|| {
        let c = start("tls", true);
        let ca = std::env::temp_dir()
            .join(format!("medic-pg-{}-tls", std::process::id()))
            .join("ca.crt");
        (c, ca)
    });
    let name = format!("s{}", N.fetch_add(1, Ordering::Relaxed));
    psql(cluster.port, "postgres", &format!("CREATE DATABASE {name}")).unwrap();
    (
        format!(
            "postgres://medic@127.0.0.1:{}/{name}?sslmode=require",
            cluster.port
        ),
        ca.clone(),
    )
}

/// One SQL command on the database of `url` (from [`database`]); its output, rows as lines.
pub fn query(url: &str, sql: &str) -> String {
    let port = CLUSTER.get().expect("a database was made first").port;
    let db = url.rsplit('/').next().unwrap();
    psql(port, db, sql).unwrap()
}

/// One SQL command on the cluster's `postgres` database (to act on a test's database from
/// outside it: refuse its connections, cut them).
pub fn admin(sql: &str) -> String {
    let port = CLUSTER.get().expect("a database was made first").port;
    psql(port, "postgres", sql).unwrap()
}
