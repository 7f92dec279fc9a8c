//! A segment's whole size is reserved in its tmpfs when it is created, so a
//! tmpfs too small for it (Docker gives `/dev/shm` 64 MiB) fails the
//! creation at once with an error that says what to do, instead of a SIGBUS
//! hours later when a lane first touches a page there is no room for.
//!
//! The small tmpfs is mounted in a private mount namespace (`unshare`), in
//! which this test binary re-runs this test: nothing stays mounted.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use ringway_layer_shm::{Config, Error, Segment};

/// Set (to the mount point) when the test runs inside the namespace.
const INSIDE: &str = "RINGWAY_TEST_SMALL_TMPFS";
const TEST: &str =
    "a_segment_too_large_for_its_tmpfs_is_refused_at_once_and_one_that_fits_is_reserved";

fn config(dir: &Path, lanes: u32) -> Config {
    Config {
        dir: dir.to_owned(),
        channels: 16,
        lanes,
        members: 16,
        lane_bytes: 256 * 1024,
        max_message: 1024,
        ..Config::default()
    }
}

fn files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

/// The checks, run in a 4 MiB tmpfs at `dir`.
fn inside(dir: &Path) {
    // 32 lanes of 256 KiB: 8 MiB and then some.
    let too_big = config(dir, 32);
    let err = Segment::create(&too_big).err().expect("creation must fail");
    let Error::NoSpace {
        needed, available, ..
    } = err
    else {
        panic!("{err}");
    };
    assert_eq!(needed, too_big.segment_size());
    assert!(
        needed > 8 << 20 && available <= 4 << 20,
        "{needed} {available}"
    );
    let msg = err.to_string();
    for part in [
        &needed.to_string(),
        &available.to_string(),
        "--shm-size",
        "lanes",
    ] {
        assert!(msg.contains(part), "{msg:?} lacks {part:?}");
    }
    assert!(files(dir).is_empty(), "left behind: {:?}", files(dir));

    // 8 lanes: about 2 MiB, which fits, and is allocated in full now.
    let fits = config(dir, 8);
    let seg = Segment::create(&fits).unwrap();
    let meta = std::fs::metadata(seg.path()).unwrap();
    assert_eq!(meta.len(), fits.segment_size());
    assert!(
        meta.blocks() * 512 >= fits.segment_size(),
        "{} of {} bytes allocated",
        meta.blocks() * 512,
        fits.segment_size()
    );
    // The reservation counts: a second one no longer fits.
    assert!(matches!(Segment::create(&fits), Err(Error::NoSpace { .. })));
    assert_eq!(files(dir).len(), 1, "{:?}", files(dir));
    println!("checked in a 4 MiB tmpfs");
}

#[test]
fn a_segment_too_large_for_its_tmpfs_is_refused_at_once_and_one_that_fits_is_reserved() {
    if let Ok(dir) = std::env::var(INSIDE) {
        inside(Path::new(&dir));
        return;
    }
    let dir = std::env::temp_dir().join(format!("ringway-small-tmpfs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = std::env::current_exe().unwrap();
    let script = format!(
        "mount -t tmpfs -o size=4m ringway-test '{}' && exec \"$0\" --exact {TEST} --nocapture --test-threads=1",
        dir.display()
    );
    // As root (CI) a mount namespace is enough; otherwise a user namespace
    // maps us to root in it.
    let run = |user: bool| {
        let mut cmd = Command::new("unshare");
        if user {
            cmd.args(["--user", "--map-root-user"]);
        }
        cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .arg(&exe)
            .env(INSIDE, &dir)
            .output()
            .expect("running unshare")
    };
    // SAFETY: plain syscall without arguments.
    let root = unsafe { libc::geteuid() } == 0;
    let out = run(!root);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("checked in a 4 MiB tmpfs"),
        "{}\n{stdout}\n{stderr}",
        out.status
    );
    // Nothing stayed mounted or behind out here.
    assert!(files(&dir).is_empty(), "{:?}", files(&dir));
    std::fs::remove_dir(&dir).unwrap();
}
