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

/// Reads and writes words of a segment through its file, as a process that
/// scribbles on the shared memory would (tmpfs pages are the same pages
/// every mapping sees).
pub struct Raw {
    file: std::fs::File,
    layout: ringway_layer_shm::layout::Layout,
}

impl Raw {
    pub fn new(seg: &ringway_layer_shm::Segment) -> Raw {
        Raw {
            file: std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(seg.path())
                .unwrap(),
            layout: seg.geometry().layout(),
        }
    }

    pub fn read_u32(&self, off: u64) -> u32 {
        use std::os::unix::fs::FileExt;
        let mut b = [0; 4];
        self.file.read_exact_at(&mut b, off).unwrap();
        u32::from_le_bytes(b)
    }

    pub fn write_u32(&self, off: u64, v: u32) {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(&v.to_le_bytes(), off).unwrap();
    }

    pub fn write_u64(&self, off: u64, v: u64) {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(&v.to_le_bytes(), off).unwrap();
    }

    /// Offset of field `field_off` of endpoint slot `i`.
    pub fn endpoint(&self, i: u32, field_off: usize) -> u64 {
        use ringway_layer_shm::layout::EndpointSlot;
        self.layout.endpoints
            + (i as usize * std::mem::size_of::<EndpointSlot>() + field_off) as u64
    }

    /// Offset of field `field_off` of channel slot `i`.
    pub fn channel(&self, i: u32, field_off: usize) -> u64 {
        use ringway_layer_shm::layout::ChannelSlot;
        self.layout.channels + (i as usize * std::mem::size_of::<ChannelSlot>() + field_off) as u64
    }

    /// Offset of the segment lock's word.
    pub fn lock_word(&self) -> u64 {
        std::mem::offset_of!(ringway_layer_shm::layout::Header, lock) as u64
    }

    /// Channel slot `i`'s count of consumers asleep.
    pub fn sleepers(&self, i: u32) -> u32 {
        use ringway_layer_shm::layout::{ChannelSlot, Wake};
        self.read_u32(self.channel(
            i,
            std::mem::offset_of!(ChannelSlot, wake) + std::mem::offset_of!(Wake, sleepers),
        ))
    }
}
