//! Throwaway database servers for the export tests: a private PostgreSQL (initdb into a
//! temporary folder) and a private MariaDB (mariadb-install-db), each on a free loopback port
//! with a real user and password, stopped and deleted when dropped. The system services are
//! never used. Missing binaries fail the test with the script that installs them.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const USER: &str = "dw_loader";
pub const PASSWORD: &str = "pw-Zq81-never-printed";
pub const DATABASE: &str = "shop_dw";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Wait until `ready` holds, at most a minute (a server that never starts fails the test).
fn wait_for(what: &str, log: &Path, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        if start.elapsed() > Duration::from_secs(60) {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{what} did not start within a minute; its log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn find_binary(candidates: &[PathBuf], script: &str) -> PathBuf {
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "{} not found; install it with `bash {script}` (scripts/test.sh runs it)",
                candidates[0].display()
            )
        })
}

/// A private PostgreSQL server.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    as_postgres: bool,
}

impl Postgres {
    pub fn start() -> Postgres {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
            .unwrap_or_default();
        versions.sort();
        let mut candidates: Vec<PathBuf> =
            versions.iter().rev().map(|b| b.join("initdb")).collect();
        candidates.push(PathBuf::from("/usr/local/bin/initdb"));
        candidates.push(PathBuf::from("/usr/bin/initdb"));
        let initdb = find_binary(&candidates, "scripts/deps/postgres.sh");
        let bin = initdb
            .canonicalize()
            .unwrap()
            .parent()
            .unwrap()
            .to_path_buf();
        let dir = tempfile::tempdir().unwrap();
        // initdb refuses to run as root: run the server as the `postgres` user then.
        let as_postgres = is_root();
        let data = dir.path().join("data");
        std::fs::write(dir.path().join("pw"), PASSWORD).unwrap();
        if as_postgres {
            run(
                Command::new("chown")
                    .arg("-R")
                    .arg("postgres")
                    .arg(dir.path()),
                "chown",
            );
            run(Command::new("chmod").arg("755").arg(dir.path()), "chmod");
        }
        let pg = Postgres {
            port: free_port(),
            dir,
            bin,
            as_postgres,
        };
        run(
            pg.command("initdb")
                .arg("-D")
                .arg(&data)
                .args(["-A", "scram-sha-256", "-U", USER, "-E", "UTF8", "--no-sync"])
                .arg(format!("--pwfile={}", pg.dir.path().join("pw").display())),
            "initdb",
        );
        let log = pg.dir.path().join("server.log");
        run(
            pg.command("pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .arg("-o")
                .arg(format!(
                    "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                    pg.port,
                    pg.dir.path().display()
                ))
                .args(["-w", "start"]),
            "pg_ctl start",
        );
        pg.psql("postgres", &format!("CREATE DATABASE {DATABASE}"));
        pg
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    pub fn url(&self) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{DATABASE}",
            self.port
        )
    }

    pub fn url_without_password(&self) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// Run SQL with psql over TCP with the password (a separate connection each time);
    /// rows as `a|b` lines.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        run(
            Command::new(
                self.bin
                    .join("psql")
                    .canonicalize()
                    .unwrap_or("psql".into()),
            )
            .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", USER, "-d", db, "-c", sql])
            .env("PGPASSWORD", PASSWORD),
            &format!("psql {sql}"),
        )
    }

    pub fn query(&self, sql: &str) -> String {
        self.psql(DATABASE, sql).trim_end().to_string()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A private MariaDB server.
pub struct MariaDb {
    dir: tempfile::TempDir,
    child: Child,
    client: PathBuf,
    pub port: u16,
}

impl MariaDb {
    pub fn start() -> MariaDb {
        let script = "scripts/deps/mariadb.sh";
        let server = find_binary(
            &[
                PathBuf::from("/usr/sbin/mariadbd"),
                PathBuf::from("/usr/bin/mariadbd"),
            ],
            script,
        );
        let install = find_binary(&[PathBuf::from("/usr/bin/mariadb-install-db")], script);
        let client = find_binary(&[PathBuf::from("/usr/bin/mariadb")], script);
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let user = if is_root() {
            "root".to_string()
        } else {
            std::env::var("USER").unwrap_or_else(|_| "nobody".into())
        };
        run(
            Command::new(install)
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .args([
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                    "--skip-name-resolve",
                ])
                .arg(format!("--user={user}")),
            "mariadb-install-db",
        );
        let port = free_port();
        let socket = dir.path().join("mysqld.sock");
        let log = dir.path().join("server.log");
        let child = Command::new(server)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--port={port}"))
            .arg(format!(
                "--pid-file={}",
                dir.path().join("mysqld.pid").display()
            ))
            .arg(format!("--log-error={}", log.display()))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=64M",
                "--innodb-log-file-size=48M",
                "--innodb-flush-log-at-trx-commit=2",
            ])
            .arg(format!("--user={user}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting mariadbd");
        let db = MariaDb {
            dir,
            child,
            client,
            port,
        };
        wait_for("mariadbd", &log, || {
            db.root_client()
                .args(["-e", "SELECT 1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        run(
            db.root_client().args([
                "-e",
                &format!(
                    "CREATE USER '{USER}'@'%' IDENTIFIED BY '{PASSWORD}'; \
                     CREATE DATABASE {DATABASE}; \
                     GRANT ALL ON {DATABASE}.* TO '{USER}'@'%';"
                ),
            ]),
            "creating the user",
        );
        db
    }

    fn root_client(&self) -> Command {
        let mut c = Command::new(&self.client);
        c.arg("--no-defaults")
            .arg(format!(
                "--socket={}",
                self.dir.path().join("mysqld.sock").display()
            ))
            .args(["-uroot", "-N", "-B"]);
        c
    }

    pub fn url(&self) -> String {
        format!(
            "mysql://{USER}:{PASSWORD}@127.0.0.1:{}/{DATABASE}",
            self.port
        )
    }

    pub fn url_without_password(&self) -> String {
        format!("mysql://{USER}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// Run SQL as the export's user over TCP (a separate connection each time); rows as
    /// tab-separated lines turned into `a|b`.
    pub fn query(&self, sql: &str) -> String {
        let out = run(
            Command::new(&self.client)
                .arg("--no-defaults")
                .args(["-h", "127.0.0.1", "-N", "-B", "-u", USER, DATABASE])
                .arg(format!("-P{}", self.port))
                .env("MYSQL_PWD", PASSWORD)
                .args(["-e", sql]),
            &format!("mariadb {sql}"),
        );
        out.trim_end().replace('\t', "|")
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
