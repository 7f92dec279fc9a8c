//! `ringway-shm`: inspect a segment, and drive it from separate processes
//! (the cross-process tests and load runs use these subcommands).
//!
//! ```text
//! ringway-shm inspect PATH
//! ringway-shm produce PATH CHANNEL ID COUNT    send COUNT messages "ID SEQ", retrying while full
//! ringway-shm join PATH GROUP                  add a new channel to GROUP, print it, wait on stdin
//! ringway-shm attach PATH                      attach an endpoint, print `ready`, wait on stdin
//! ringway-shm hold-lock PATH                   take the segment lock and hang (for crash tests)
//! ringway-shm create DIR                       create a segment in DIR with a reaper and a doorbell,
//!                                              print its path, wait on stdin (for crash tests)
//! ringway-shm wait-space PATH CHANNEL          fill CHANNEL, print `waiting`, block in wait_space (10 s),
//!                                              print `woken RESULT MS`, send once more, print `sent`
//! ringway-shm sleep-in PATH                    own channel `sleeper!`, print `ready`, sleep receiving
//! ringway-shm demo [PRODUCERS] [COUNT]         a live demo: producer processes into one consumer
//! ```

// Under `cfg(loom)` the crate is only its ring protocol, for the models.
#[cfg(loom)]
fn main() {}

#[cfg(not(loom))]
fn main() -> std::process::ExitCode {
    cli::main()
}

#[cfg(not(loom))]
mod cli {
    use std::io::{BufRead, Write};
    use std::process::ExitCode;

    use ringway_layer_shm::{Segment, SendError};

    fn usage() -> ExitCode {
        eprintln!(
            "usage: ringway-shm inspect PATH\n       ringway-shm produce PATH CHANNEL ID COUNT\n       ringway-shm join PATH GROUP\n       ringway-shm attach PATH\n       ringway-shm hold-lock PATH\n       ringway-shm create DIR\n       ringway-shm wait-space PATH CHANNEL\n       ringway-shm sleep-in PATH\n       ringway-shm demo [PRODUCERS] [COUNT]"
        );
        ExitCode::from(2)
    }

    pub fn main() -> ExitCode {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let result = match args.as_slice() {
            ["inspect", path] => inspect(path),
            ["produce", path, channel, id, count] => match (id.parse(), count.parse()) {
                (Ok(id), Ok(count)) => produce(path, channel, id, count),
                _ => return usage(),
            },
            ["join", path, group] => join(path, group),
            ["demo"] => demo(4, 2_000_000),
            ["demo", n] => match n.parse() {
                Ok(n) => demo(n, 2_000_000),
                _ => return usage(),
            },
            ["demo", n, count] => match (n.parse(), count.parse()) {
                (Ok(n), Ok(count)) => demo(n, count),
                _ => return usage(),
            },
            ["hold-lock", path] => Segment::open(path)
                .and_then(|s| s.hold_lock_forever_for_tests())
                .map(drop),
            ["create", dir] => create(dir),
            ["attach", path] => attach(path),
            ["wait-space", path, channel] => wait_space(path, channel),
            ["sleep-in", path] => sleep_in(path),
            _ => return usage(),
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ringway-shm: {e}");
                ExitCode::FAILURE
            }
        }
    }

    fn inspect(path: &str) -> ringway_layer_shm::Result<()> {
        let seg = Segment::open(path)?;
        println!("{path}: {:?}", seg.geometry());
        println!("{:?}", seg.stats());
        Ok(())
    }

    /// Sends `count` messages `"{id} {seq}"` (padded to 64 bytes), retrying on
    /// Full, then prints `done`.
    fn produce(path: &str, channel: &str, id: u32, count: u64) -> ringway_layer_shm::Result<()> {
        let seg = Segment::open(path)?;
        let mut ep = seg.endpoint()?;
        let ch = ep.channel(channel)?;
        println!("ready");
        std::io::stdout().flush().ok();
        let mut msg = [b' '; 64];
        for seq in 0..count {
            let head = format!("{id} {seq}");
            msg[..head.len()].copy_from_slice(head.as_bytes());
            msg[head.len()..].fill(b' ');
            loop {
                match ep.send_id(ch, b"", &msg) {
                    Ok(()) => break,
                    Err(SendError::Full) => std::hint::spin_loop(),
                    Err(SendError::Other(e)) => return Err(e),
                }
            }
        }
        println!("done");
        Ok(())
    }

    /// Creates a segment, starts `producers` processes sending `count` messages
    /// each into one channel, receives them all here, checks order, and
    /// reports the rate, a killed-and-reclaimed producer, and the tables.
    fn demo(producers: usize, count: u64) -> ringway_layer_shm::Result<()> {
        use ringway_layer_shm::{Config, Reaper};
        use std::process::{Command, Stdio};
        use std::time::{Duration, Instant};

        let seg = Segment::create(&Config {
            channel_capacity: vec![("demo.inbox".into(), 8192)],
            ..Config::default()
        })?;
        let _reaper = Reaper::spawn(seg.clone(), |r| match r {
            Ok(r) => println!("reaper: reclaimed {r:?}"),
            Err(e) => eprintln!("reaper: {e}"),
        })?;
        let path = seg.path().to_str().expect("UTF-8 path").to_owned();
        println!("segment {path}: {:?}", seg.geometry());
        let mut ep = seg.endpoint()?;
        let inbox = ep.channel("demo.inbox")?;
        let exe = std::env::current_exe().expect("own path");
        let spawn = |id: usize, n: u64| {
            Command::new(&exe)
                .args([
                    "produce",
                    &path,
                    "demo.inbox",
                    &id.to_string(),
                    &n.to_string(),
                ])
                .stdout(Stdio::null())
                .spawn()
                .expect("spawning a producer")
        };
        let mut children: Vec<_> = (0..producers).map(|i| spawn(i, count)).collect();
        // One more producer that is killed half way, to show reclamation.
        let mut victim = Some(spawn(producers, u64::MAX));
        let mut next = vec![0u64; producers + 1];
        let mut buf = Vec::new();
        let start = Instant::now();
        let total = producers as u64 * count;
        let mut got = 0u64;
        while got < total {
            match ep.try_receive_id(inbox, &mut buf)? {
                Some(_) => {
                    let text = std::str::from_utf8(&buf).unwrap_or("").trim_end();
                    let (id, seq) = text.split_once(' ').expect("demo message");
                    let (id, seq): (usize, u64) = (id.parse().unwrap(), seq.parse().unwrap());
                    assert_eq!(seq, next[id], "producer {id} out of order");
                    next[id] += 1;
                    if id < producers {
                        got += 1;
                    }
                    if id == producers && seq == 100_000 {
                        if let Some(mut v) = victim.take() {
                            v.kill().ok();
                            v.wait().ok();
                            println!("killed producer {id} (pid {}) mid-stream", v.id());
                        }
                    }
                }
                None => ep.wait(inbox, Some(Duration::from_millis(100))),
            }
        }
        let secs = start.elapsed().as_secs_f64();
        for c in &mut children {
            c.wait().ok();
        }
        if let Some(mut v) = victim.take() {
            v.kill().ok();
            v.wait().ok();
        }
        while ep.try_receive_id(inbox, &mut buf)?.is_some() {}
        println!(
            "received {got} messages from {producers} processes in {secs:.2} s ({:.1} M msg/s), each producer's in order",
            got as f64 / secs / 1e6
        );
        println!(
            "killed producer delivered {} messages before it died",
            next[producers]
        );
        println!("tables now: {:?}", seg.stats());
        Ok(())
    }

    /// Creates a segment in `dir` as the server would (with a reaper, and an
    /// endpoint with a doorbell), prints its path, and waits for stdin to
    /// close.
    fn create(dir: &str) -> ringway_layer_shm::Result<()> {
        use ringway_layer_shm::{Config, Reaper};
        let seg = Segment::create(&Config {
            dir: dir.into(),
            channels: 4,
            lanes: 4,
            members: 4,
            lane_bytes: 4096,
            max_message: 1024,
            ..Config::default()
        })?;
        let _reaper = Reaper::spawn(seg.clone(), |_| {})?;
        let mut ep = seg.endpoint()?;
        ep.wait_fd()?;
        println!("{}", seg.path().display());
        std::io::stdout().flush().ok();
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        Ok(())
    }

    /// Attaches an endpoint (nothing else: no lock taken), prints `ready`,
    /// and stays attached until stdin closes.
    fn attach(path: &str) -> ringway_layer_shm::Result<()> {
        let seg = Segment::open(path)?;
        let _ep = seg.endpoint()?;
        println!("ready");
        std::io::stdout().flush().ok();
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        Ok(())
    }

    /// Fills `channel` until it is full, prints `waiting`, waits for room
    /// (up to 10 s), prints `woken RESULT MILLISECONDS`, sends once more
    /// and prints `sent`.
    fn wait_space(path: &str, channel: &str) -> ringway_layer_shm::Result<()> {
        use std::time::{Duration, Instant};
        let seg = Segment::open(path)?;
        let mut ep = seg.endpoint()?;
        let ch = ep.channel(channel)?;
        loop {
            match ep.send_id(ch, b"", b"fill") {
                Ok(()) => {}
                Err(SendError::Full) => break,
                Err(SendError::Other(e)) => return Err(e),
            }
        }
        println!("waiting");
        std::io::stdout().flush().ok();
        let start = Instant::now();
        let woken = ep.wait_space(ch, Some(Duration::from_secs(10)))?;
        println!("woken {woken} {}", start.elapsed().as_millis());
        match ep.send_id(ch, b"", b"after") {
            Ok(()) => println!("sent"),
            Err(e) => println!("not sent: {e}"),
        }
        Ok(())
    }

    /// Owns the channel `sleeper!`, prints `ready`, and sleeps receiving
    /// from it for ever (to be killed asleep).
    fn sleep_in(path: &str) -> ringway_layer_shm::Result<()> {
        let seg = Segment::open(path)?;
        let mut ep = seg.endpoint()?;
        ep.own_channel("sleeper!")?;
        println!("ready");
        std::io::stdout().flush().ok();
        loop {
            ep.receive("sleeper!x", None)?;
        }
    }

    /// Creates a process-specific channel, adds it to `group`, prints its name,
    /// and stays attached until stdin closes.
    fn join(path: &str, group: &str) -> ringway_layer_shm::Result<()> {
        let seg = Segment::open(path)?;
        let mut ep = seg.endpoint()?;
        let name = ep.new_channel("member.")?;
        ep.group_add(group, &name)?;
        println!("{name}");
        std::io::stdout().flush().ok();
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        Ok(())
    }
}
