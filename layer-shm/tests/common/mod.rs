//! Helpers shared by the cross-process tests: real processes of the
//! `ringway-shm` binary, readiness by a line on their stdout.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use ringway_layer_shm::Config;

/// A child process whose stdout we read line by line.
pub struct Peer {
    pub child: Child,
    pub out: BufReader<ChildStdout>,
}

impl Peer {
    /// Starts `ringway-shm ARGS...`.
    pub fn spawn(args: &[&str]) -> Peer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringway-shm"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawning ringway-shm");
        let out = BufReader::new(child.stdout.take().unwrap());
        Peer { child, out }
    }

    /// The next line of output (panics at EOF).
    pub fn line(&mut self) -> String {
        let mut l = String::new();
        let n = self.out.read_line(&mut l).expect("reading peer output");
        assert!(n > 0, "peer exited before printing a line");
        l.trim_end().to_owned()
    }

    /// Waits for the process to exit successfully.
    pub fn finish(mut self) {
        drop(self.child.stdin.take());
        let st = self.child.wait().unwrap();
        assert!(st.success(), "peer failed: {st}");
    }

    /// SIGKILLs the process and reaps it.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small segment suitable for tests.
pub fn config() -> Config {
    Config {
        channels: 64,
        lanes: 32,
        members: 2048,
        lane_bytes: 64 * 1024,
        max_message: 4096,
        ..Config::default()
    }
}

/// Polls `cond` until it holds or `limit` passes; returns whether it held.
/// For conditions that another process makes true, where there is nothing
/// to block on (the reaper's sweep, say).
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::yield_now();
    }
    cond()
}

/// Parses a `produce` message: `"ID SEQ"` padded with spaces.
pub fn parse(msg: &[u8]) -> (usize, u64) {
    let s = std::str::from_utf8(msg).unwrap().trim_end();
    let (id, seq) = s.split_once(' ').unwrap();
    (id.parse().unwrap(), seq.parse().unwrap())
}
