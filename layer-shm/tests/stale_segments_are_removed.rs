//! A segment whose creator died without removing it (SIGKILL) is removed by
//! the next `Segment::create` in the same directory; a segment whose creator
//! is alive, and files that are not segments, are left alone.

use std::path::Path;
use std::process::Command;

use ringway_layer_shm::{Config, Segment};

/// The pid of a process that has exited (and been reaped).
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().expect("spawning true");
    let pid = child.id();
    child.wait().unwrap();
    assert!(!Path::new("/proc").join(pid.to_string()).exists());
    pid
}

#[test]
fn segments_of_dead_creators_are_removed_and_live_ones_kept() {
    let dir = Path::new("/dev/shm").join(format!("ringway-stale-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    let hex = "0123456789abcdef01234567";
    let dead = dead_pid();
    let stale = [
        format!("ringway-{dead}-{hex}"),
        format!("ringway-{dead}-{hex}.bell.3.0"),
        format!("ringway-{dead}-{hex}.reaper"),
    ];
    // pid 1 is alive; the other two are not segment names.
    let kept = [
        format!("ringway-1-{hex}"),
        format!("ringway-{dead}-notahexname"),
        "unrelated".to_owned(),
    ];
    for f in stale.iter().chain(&kept) {
        std::fs::write(dir.join(f), b"x").unwrap();
    }
    let seg = Segment::create(&Config {
        dir: dir.clone(),
        ..Config::default()
    })
    .unwrap();
    for f in &stale {
        assert!(!dir.join(f).exists(), "{f} should have been removed");
    }
    for f in &kept {
        assert!(dir.join(f).exists(), "{f} should have been kept");
    }
    assert!(seg.path().exists(), "the new segment is not stale");
    drop(seg);
    std::fs::remove_dir_all(&dir).unwrap();
}
