//! The channel layer's segment is reserved in full when the server starts:
//! a `/dev/shm` too small for it (Docker's and Kubernetes' default is 64
//! MiB) fails at once with what is needed, what is free and how to fix it,
//! instead of a SIGBUS hours later. The test mounts a small tmpfs in a
//! private mount namespace (`unshare`), so nothing stays mounted.

use std::process::Command;

/// Runs `ringway-server ARGS --shm-dir DIR` inside a private mount
/// namespace where DIR is a 16 MiB tmpfs; the server is stopped with
/// SIGQUIT once it is up. Returns (exit code, stdout, stderr).
fn in_small_tmpfs(name: &str, args: &str) -> (i32, String, String) {
    let dir = std::env::temp_dir().join(format!("ringway-shm-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=16m ringway-test '{dir}' || exit 99
         \"$0\" --bind 127.0.0.1:0 --bench-worker hello --shm-dir '{dir}' {args} &
         pid=$!
         for i in $(seq 100); do
           kill -0 $pid 2>/dev/null || break
           if [ -n \"$(ls '{dir}')\" ] && ls /proc/$pid/task/*/children >/dev/null 2>&1 && [ -n \"$(cat /proc/$pid/task/*/children)\" ]; then
             sleep 0.5; kill -QUIT $pid; break
           fi
           sleep 0.1
         done
         wait $pid",
        dir = dir.display()
    );
    // SAFETY: plain syscall without arguments.
    let root = unsafe { libc::geteuid() } == 0;
    let mut cmd = Command::new("unshare");
    if !root {
        cmd.args(["--user", "--map-root-user"]);
    }
    let out = cmd
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .arg(env!("CARGO_BIN_EXE_ringway-server"))
        .output()
        .expect("running unshare");
    let _ = std::fs::remove_dir(&dir);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_tmpfs_too_small_for_the_segment_fails_at_once_saying_what_to_do() {
    // 2 reactors and 8 workers: 5 lanes of 256 KiB for each of 18 worker
    // processes (8, and a replacement beside each), far more than 16 MiB.
    let (code, out, err) = in_small_tmpfs("small", "--reactors 2 --workers 8");
    assert_ne!(code, 99, "could not mount a tmpfs: {err}");
    assert_ne!(code, 0, "{out}\n{err}");
    assert!(!out.contains("listening at"), "{out}");
    for needle in [
        "needs",
        "MiB of shared memory",
        "only 16 MiB are free",
        "--shm-size",
        "--shm-dir",
        "--lane-size",
    ] {
        assert!(err.contains(needle), "{needle:?} not in: {err}");
    }
}

#[test]
fn a_segment_that_fits_is_reserved_and_serves() {
    let (code, out, err) = in_small_tmpfs("fits", "--reactors 1 --workers 1");
    assert_ne!(code, 99, "could not mount a tmpfs: {err}");
    assert!(out.contains("listening at"), "{out}\n{err}");
    // Stopped with SIGQUIT: the fast stop's exit code.
    assert_eq!(code, 1, "{out}\n{err}");
}
