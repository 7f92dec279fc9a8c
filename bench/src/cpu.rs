//! Where the parties of a rig run: this process's thread on one CPU, its
//! peers on the others.
//!
//! Pinning makes runs comparable. Left to itself the scheduler sometimes puts
//! a spinning consumer on the same CPU as the producer it waits for, and the
//! round trip then costs a time slice instead of a cache-line transfer; it
//! also moves sleeping peers between CPUs, and a wake-up across CPUs (an
//! inter-processor interrupt, slow under a hypervisor) costs several times
//! one on the same CPU. Pinned, every rig pays the cross-CPU price, which is
//! the case of a server and its workers on separate cores.

use std::io;
use std::marker::PhantomData;

/// The CPUs this process may run on, lowest first.
fn allowed() -> io::Result<Vec<usize>> {
    // SAFETY: `cpu_set_t` is a plain bit array; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `c` is below the set's size in bits.
    Ok((0..max)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}

/// Which CPU a party runs on: the consumer (this process's measuring thread)
/// on the first allowed CPU, peer `i` on the next ones in turn. `None` on a
/// single CPU, where pinning would only hurt, or when the environment sets
/// `RINGWAY_BENCH_NO_PIN` (to see what the scheduler does on its own).
pub fn cpu_for(party: Party) -> Option<usize> {
    if std::env::var_os("RINGWAY_BENCH_NO_PIN").is_some() {
        return None;
    }
    let cpus = allowed().ok()?;
    if cpus.len() < 2 {
        return None;
    }
    Some(match party {
        Party::Consumer => cpus[0],
        Party::Peer(i) => cpus[1 + i % (cpus.len() - 1)],
    })
}

/// A party of a rig.
#[derive(Clone, Copy, Debug)]
pub enum Party {
    /// The thread that measures (and consumes, in stream rigs).
    Consumer,
    /// The `i`th peer (echo or producer).
    Peer(usize),
}

/// The calling thread's CPU mask before [`pin`]; restores it when dropped.
pub struct Pinned {
    previous: Option<libc::cpu_set_t>,
    /// Affinity is per thread: the mask must be restored on the thread that
    /// changed it.
    _not_send: PhantomData<*const ()>,
}

/// Pins the calling thread to `party`'s CPU (see [`cpu_for`]).
pub fn pin(party: Party) -> io::Result<Pinned> {
    let Some(cpu) = cpu_for(party) else {
        return Ok(Pinned {
            previous: None,
            _not_send: PhantomData,
        });
    };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: all-zero is the empty set.
    let mut previous: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `previous` is a valid, writable cpu_set_t of `size` bytes.
    if unsafe { libc::sched_getaffinity(0, size, &mut previous) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` came from `allowed`, so it is below the set's size in bits.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of `size` bytes; 0 is this thread.
    if unsafe { libc::sched_setaffinity(0, size, &set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Pinned {
        previous: Some(previous),
        _not_send: PhantomData,
    })
}

impl Drop for Pinned {
    fn drop(&mut self) {
        if let Some(previous) = &self.previous {
            // SAFETY: `previous` is the valid mask read in `pin`; 0 is this
            // thread, the one that made the `Pinned` (it is not `Send`).
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), previous) };
        }
    }
}
