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
        let mut s = RedisServer { child: None, port };
        s.spawn()?;
        Ok(s)
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
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

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
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
    }
}
