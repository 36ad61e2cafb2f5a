//! [`RedisServer`]: a throwaway `redis-server` on a loopback port, for tests
//! and demos (no Docker).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `redis-server` process this value owns: started on a free loopback
/// port with nothing persisted, stopped (killed) when dropped.
///
/// ```no_run
/// # fn main() -> std::io::Result<()> {
/// let redis = llm_tower_redis::RedisServer::start()?;
/// assert!(redis.url().starts_with("redis://127.0.0.1:"));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    tls: Option<Tls>,
}

/// A TLS server's throwaway CA and certificate for 127.0.0.1.
#[derive(Debug)]
struct Tls {
    dir: std::path::PathBuf,
    ca_pem: Vec<u8>,
}

impl RedisServer {
    /// Whether a `redis-server` binary is on the `PATH`.
    pub fn available() -> bool {
        Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    }

    /// Starts one on a free port and waits (blocking, at most 2 s) until it
    /// answers.
    pub fn start() -> std::io::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut s = RedisServer { child: None, port, tls: None };
        s.spawn()?;
        Ok(s)
    }

    /// For tests: a started server, or `None` with a line on stderr saying
    /// the test is skipped because `redis-server` is not installed.
    ///
    /// # Panics
    /// When it is installed but does not start.
    pub fn start_or_skip() -> Option<Self> {
        if !Self::available() {
            eprintln!("skipped: redis-server is not installed (apt-get install redis-server)");
            return None;
        }
        Some(Self::start().expect("redis-server starts"))
    }

    /// For tests: [`start_tls`](Self::start_tls), or `None` with a line on
    /// stderr saying the test is skipped and what is missing.
    ///
    /// # Panics
    /// When everything it needs is installed but it does not start.
    pub fn start_tls_or_skip() -> Option<Self> {
        if !Self::tls_available() {
            eprintln!("skipped: redis-server, redis-cli and openssl are needed for the TLS test");
            return None;
        }
        Some(Self::start_tls().expect("a TLS redis-server starts"))
    }

    /// Whether [`start_tls`](Self::start_tls) can run here: `openssl` (to
    /// make the certificate) and `redis-cli` (to see it answer) beside
    /// `redis-server`.
    pub fn tls_available() -> bool {
        let runs = |cmd: &str, arg: &str| {
            Command::new(cmd).arg(arg).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
        };
        Self::available() && runs("openssl", "version") && runs("redis-cli", "--version")
    }

    /// Starts one that speaks only TLS, with a certificate for 127.0.0.1
    /// signed by a throwaway CA made here ([`ca_pem`](Self::ca_pem): what a
    /// client trusts); [`url`](Self::url) is then `rediss://`.
    pub fn start_tls() -> std::io::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = std::env::temp_dir().join(format!("llm-tower-redis-tls-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        // A CA, and a certificate for 127.0.0.1 it signs (a self-signed
        // server certificate is a CA used as an end entity: refused).
        let openssl = |args: &[&str]| -> std::io::Result<()> {
            let ok = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?
                .success();
            if ok { Ok(()) } else { Err(std::io::Error::other(format!("openssl {} failed", args[0]))) }
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=llm-tower test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ])?;
        std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")?;
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "key.pem",
            "-out",
            "server.csr",
        ])?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
            "-out",
            "cert.pem",
        ])?;
        let ca_pem = std::fs::read(dir.join("ca.pem"))?;
        let mut s = RedisServer { child: None, port, tls: Some(Tls { dir, ca_pem }) };
        s.spawn()?;
        Ok(s)
    }

    /// The PEM certificate of the CA that signed a TLS server's certificate
    /// (`None`: not TLS).
    pub fn ca_pem(&self) -> Option<&[u8]> {
        self.tls.as_ref().map(|t| t.ca_pem.as_slice())
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let port = self.port.to_string();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        match &self.tls {
            None => {
                cmd.args(["--port", &port]);
            }
            Some(t) => {
                cmd.args(["--port", "0", "--tls-port", &port, "--tls-auth-clients", "no"])
                    .arg("--tls-cert-file")
                    .arg(t.dir.join("cert.pem"))
                    .arg("--tls-key-file")
                    .arg(t.dir.join("key.pem"));
            }
        }
        self.child = Some(cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn()?);
        if let Some(t) = &self.tls {
            // Ready when it answers PING over TLS.
            for _ in 0..200 {
                let out = Command::new("redis-cli")
                    .args(["-h", "127.0.0.1", "-p", &port, "--tls", "--cacert"])
                    .arg(t.dir.join("ca.pem"))
                    .arg("PING")
                    .output()?;
                if out.stdout.starts_with(b"PONG") {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            return Err(std::io::Error::other("redis-server (TLS) did not answer PING within 2 s"));
        }
        // Ready when it accepts a connection and answers PING.
        for _ in 0..200 {
            if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                let _ = c.set_read_timeout(Some(Duration::from_millis(200)));
                if c.write_all(b"PING\r\n").is_ok() {
                    let mut buf = [0u8; 7];
                    if c.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n" {
                        return Ok(());
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(std::io::Error::other("redis-server did not answer PING within 2 s"))
    }

    /// `redis://127.0.0.1:<port>` (`rediss://` when TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Kills it (an outage): connections fail until [`restart`](Self::restart).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, empty (a restart that lost its data).
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.kill();
        self.spawn()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        if let Some(t) = &self.tls {
            let _ = std::fs::remove_dir_all(&t.dir);
        }
    }
}
