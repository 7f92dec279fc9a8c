//! `ringway-shm`: inspect a segment, and drive it from separate processes
//! (the cross-process tests and load runs use these subcommands).
//!
//! ```text
//! ringway-shm inspect PATH
//! ringway-shm produce PATH CHANNEL ID COUNT    send COUNT messages "ID SEQ", retrying while full
//! ringway-shm join PATH GROUP                  add a new channel to GROUP, print it, wait on stdin
//! ringway-shm hold-lock PATH                   take the segment lock and hang (for crash tests)
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
            "usage: ringway-shm inspect PATH\n       ringway-shm produce PATH CHANNEL ID COUNT\n       ringway-shm join PATH GROUP\n       ringway-shm hold-lock PATH"
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
            ["hold-lock", path] => Segment::open(path)
                .and_then(|s| s.hold_lock_forever_for_tests())
                .map(drop),
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
