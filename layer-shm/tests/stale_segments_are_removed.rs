//! A segment whose creator died without removing it (SIGKILL) is removed,
//! with its doorbells, by the next `Segment::create` in the same directory;
//! a segment whose creator runs is kept whatever pid its name carries (the
//! creator's `flock` decides, not the pid: pid namespaces may share a
//! `/dev/shm`), and files that are not segments are left alone.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Peer;
use ringway_layer_shm::{remove_stale, Config, Segment};

/// The pid of a process that has exited (and been reaped).
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().expect("spawning true");
    let pid = child.id();
    child.wait().unwrap();
    assert!(!Path::new("/proc").join(pid.to_string()).exists());
    pid
}

/// A fresh directory in the tmpfs, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir = Path::new("/dev/shm").join(format!("ringway-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        Dir(dir)
    }

    fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn small(dir: &Path) -> Config {
    Config {
        dir: dir.to_owned(),
        channels: 4,
        lanes: 4,
        members: 4,
        lane_bytes: 4096,
        max_message: 1024,
        ..Config::default()
    }
}

#[test]
fn a_killed_creators_segment_and_doorbells_are_removed() {
    let dir = Dir::new("stale-killed");
    let mut server = Peer::spawn(&["create", dir.0.to_str().unwrap()]);
    let path = PathBuf::from(server.line());
    let name = path.file_name().unwrap().to_str().unwrap().to_owned();
    let files = dir.files();
    assert!(files.contains(&name), "{files:?}");
    assert!(files.contains(&format!("{name}.reaper")), "{files:?}");
    assert!(
        files
            .iter()
            .any(|f| f.starts_with(&format!("{name}.bell."))),
        "{files:?}"
    );
    // While it runs, nothing of it is stale.
    assert_eq!(remove_stale(&dir.0), Vec::<PathBuf>::new());
    server.kill();
    let mut removed: Vec<String> = remove_stale(&dir.0)
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    removed.sort();
    assert_eq!(removed, files);
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}

#[test]
fn a_running_creators_segment_is_kept_whatever_pid_its_name_carries() {
    let dir = Dir::new("stale-live");
    let hex = "0123456789abcdef01234567";
    let dead = dead_pid();
    // A segment created by this process, renamed as if a process in
    // another pid namespace (whose pid means nothing here) had made it.
    let ours = Segment::create(&small(&dir.0)).unwrap();
    let renamed = dir.0.join(format!("ringway-{dead}-{hex}"));
    std::fs::rename(ours.path(), &renamed).unwrap();
    // And one made by another running process, renamed the same way.
    let mut server = Peer::spawn(&["create", dir.0.to_str().unwrap()]);
    let theirs = PathBuf::from(server.line());
    let theirs_renamed = dir.0.join(format!("ringway-{dead}-{}", "f".repeat(24)));
    std::fs::rename(&theirs, &theirs_renamed).unwrap();
    // No one holds these: a segment left by a creator that died (its name
    // carries a live pid, which does not matter), the doorbell of a segment
    // that is gone, and a file of an older layout (whose creators took no
    // flock) whose pid is dead.
    let abandoned = dir.0.join(format!("ringway-1-{}", "a".repeat(24)));
    std::fs::copy(&renamed, &abandoned).unwrap();
    let orphan_bell = dir.0.join(format!("ringway-1-{}.bell.3.0", "b".repeat(24)));
    std::fs::write(&orphan_bell, b"").unwrap();
    let old_dead = dir.0.join(format!("ringway-{dead}-{}", "d".repeat(24)));
    std::fs::write(&old_dead, b"RINGWAY\0\x02\0\0\0").unwrap();
    // Not ours to judge: other names, an empty file (its creator may not
    // have locked it yet), and a file of an older layout whose pid lives.
    let kept = [
        format!("ringway-{dead}-notahexname"),
        "unrelated".to_owned(),
        format!("ringway-2-{}", "c".repeat(24)),
        format!("ringway-1-{}", "e".repeat(24)),
    ];
    std::fs::write(dir.0.join(&kept[0]), b"x").unwrap();
    std::fs::write(dir.0.join(&kept[1]), b"x").unwrap();
    std::fs::write(dir.0.join(&kept[2]), b"").unwrap();
    std::fs::write(dir.0.join(&kept[3]), b"RINGWAY\0\x02\0\0\0").unwrap();

    let removed = remove_stale(&dir.0);
    assert!(renamed.exists(), "our live segment was removed");
    assert!(theirs_renamed.exists(), "a live peer's segment was removed");
    for f in &kept {
        assert!(dir.0.join(f).exists(), "{f} should have been kept");
    }
    let expected = [abandoned, orphan_bell, old_dead];
    for e in &expected {
        assert!(removed.contains(e), "{e:?} not removed: {removed:?}");
    }
    // Besides those, only the peer's doorbells went: they are named after
    // the path we renamed away, so their segment looks gone.
    let bells_of_theirs = format!("{}.", theirs.display());
    for r in &removed {
        assert!(
            expected.contains(r) || r.to_str().unwrap().starts_with(&bells_of_theirs),
            "{r:?} should have been kept"
        );
    }
    server.finish();
    drop(ours);
}

#[test]
fn creating_a_segment_removes_stale_ones_first() {
    let dir = Dir::new("stale-create");
    let mut server = Peer::spawn(&["create", dir.0.to_str().unwrap()]);
    let old = PathBuf::from(server.line());
    server.kill();
    assert!(old.exists());
    let seg = Segment::create(&small(&dir.0)).unwrap();
    assert!(!old.exists(), "the dead creator's segment is gone");
    assert_eq!(
        dir.files(),
        vec![seg.path().file_name().unwrap().to_str().unwrap().to_owned()]
    );
}
