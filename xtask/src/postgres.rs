//! A throwaway PostgreSQL cluster for the tests and the fleet simulator, from Debian's
//! packages: `initdb` into a temporary folder, the server listening on a Unix socket in that
//! folder and on a free TCP port of 127.0.0.1 (the hub's TLS test reaches it there), stopped
//! and removed when dropped.
//! As root, the server runs as Debian's `postgres` user (PostgreSQL refuses to run as root).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::sh;

pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    run_as: Option<&'static str>,
    /// Its port, on the Unix socket in `dir` and on 127.0.0.1 (TCP: for the TLS tests).
    port: u16,
}

/// A TCP port free on 127.0.0.1 now (a system PostgreSQL may hold 5432).
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// The server programs of the newest PostgreSQL installed (`/usr/lib/postgresql/N/bin`),
/// installing Debian's `postgresql` when there is none.
fn bindir() -> Result<PathBuf> {
    let find = || -> Option<PathBuf> {
        let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| {
                let e = e.ok()?;
                let v: u32 = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                bin.join("initdb").exists().then_some((v, bin))
            })
            .collect();
        found.sort();
        found.pop().map(|(_, b)| b)
    };
    if let Some(b) = find() {
        return Ok(b);
    }
    sh::install_packages(&["postgresql"])?;
    find().context("no /usr/lib/postgresql/*/bin/initdb after installing `postgresql`")
}

/// Stops and removes the clusters of earlier runs that were killed before they could (their
/// folder is named after a process that no longer exists): nothing is left running for
/// longer than the next run.
fn reap_stale(base: &Path, bin: &Path, run_as: Option<&'static str>) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("iat-pg-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let stale = Cluster {
            dir: e.path(),
            bin: bin.to_owned(),
            run_as,
            port: 0,
        };
        println!(
            "xtask: stopping and removing a PostgreSQL cluster left by an interrupted run ({})",
            stale.dir.display()
        );
        drop(stale);
    }
}

impl Cluster {
    /// A new cluster, started and accepting connections.
    pub fn start() -> Result<Cluster> {
        let bin = bindir()?;
        let run_as = sh::is_root().then_some("postgres");
        // The server's user must reach the folder: under /tmp when it is not us.
        let base = match run_as {
            Some(_) => PathBuf::from("/tmp"),
            None => std::env::temp_dir(),
        };
        reap_stale(&base, &bin, run_as);
        let dir = base.join(format!("iat-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        if let Some(user) = run_as {
            sh::run(Command::new("chown").arg(user).arg(&dir))
                .with_context(|| format!("PostgreSQL runs as `{user}`, which must exist"))?;
        }
        let cluster = Cluster {
            dir,
            bin,
            run_as,
            port: free_port()?,
        };
        let data = cluster.dir.join("data");
        cluster
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
            ])
            .output()
            .context("running initdb")
            .and_then(|o| {
                if o.status.success() {
                    Ok(())
                } else {
                    bail!("initdb failed: {}", String::from_utf8_lossy(&o.stderr))
                }
            })?;
        let opts = format!(
            "-p {} -k {} -c listen_addresses='127.0.0.1' -c max_connections=300",
            cluster.port,
            cluster.dir.display()
        );
        let log = cluster.dir.join("server.log");
        let started = cluster
            .command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-o", &opts, "-l"])
            .arg(&log)
            .args(["-w", "-t", "60", "start"])
            .output()
            .context("running pg_ctl start")?;
        if !started.status.success() {
            bail!(
                "PostgreSQL did not start: {}{}",
                String::from_utf8_lossy(&started.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        cluster.wait_ready()?;
        println!(
            "xtask: PostgreSQL cluster in {} ({})",
            cluster.dir.display(),
            cluster.bin.display()
        );
        Ok(cluster)
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    fn wait_ready(&self) -> Result<()> {
        let start = Instant::now();
        loop {
            let ok = self
                .command("pg_isready")
                .args(["-h"])
                .arg(&self.dir)
                .args(["-p", &self.port.to_string(), "-q"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!(
                    "PostgreSQL in {} is not ready after 30 s",
                    self.dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A libpq key-value connection string to the cluster's maintenance database (the hub's
    /// tests append `dbname=...` for a database of their own).
    pub fn conninfo(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname=postgres",
            self.dir.display(),
            self.port
        )
    }

    /// The folder holding the cluster (its server log: `server.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
