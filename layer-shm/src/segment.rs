//! Creating, opening and mapping a segment; typed access to its tables;
//! attaching endpoint slots; taking the segment lock.
//!
//! Repairing the tables after a lock owner died is not done here: taking
//! the lock reports the dead owner, and `repair::lock` does the rest.

use std::collections::HashSet;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::layout::{
    endpoint_state, ChannelSlot, EndpointSlot, Geometry, Header, LaneSlot, Layout, MemberSlot,
    RuleSlot, ARCH_TAG, MAGIC, MAX_ENDPOINTS, MAX_NAME, MAX_RULES, VERSION,
};
use crate::liveness::{self, Watches};
use crate::lock::LockWord;
use crate::ring::{self, Lane, LaneLimits};
use crate::sync::CachePadded;
use crate::sys::{self, Mapping};
use crate::wake;

/// The longest message or group expiry a segment takes: ten years, far
/// beyond any sensible setting and far from overflowing a deadline.
pub const MAX_EXPIRY_MS: u64 = 10 * 366 * 86_400_000;

/// How long a table change waits for the segment lock before giving up.
const LOCK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a waiting locker sleeps before it looks again whether the
/// owner is still alive: an owner that dies holding the lock never wakes
/// anyone, so this bounds how late its death is noticed.
const LOCK_RECHECK: Duration = Duration::from_millis(10);

/// What a segment is made with. The names follow `channels_redis`'s options.
#[derive(Clone, Debug)]
pub struct Config {
    /// Directory for the segment file (a tmpfs: `/dev/shm`).
    pub dir: PathBuf,
    /// Channel slots: named channels (each process-specific prefix is one).
    pub channels: u32,
    /// Lanes: one per (producer endpoint, channel) pair in use.
    pub lanes: u32,
    /// Group membership slots.
    pub members: u32,
    /// Bytes of each lane's data area (a power of two). The whole segment is
    /// reserved when it is created: `lanes * lane_bytes` is most of the
    /// memory it costs (see [`Config::segment_size`]).
    pub lane_bytes: u32,
    /// Largest message payload; larger messages are split by the caller.
    pub max_message: u32,
    /// Default channel capacity in messages (`capacity`).
    pub capacity: u32,
    /// Per-name capacities (`channel_capacity`): glob pattern and capacity,
    /// first match wins.
    pub channel_capacity: Vec<(String, u32)>,
    /// Message expiry (`expiry`).
    pub expiry: Duration,
    /// Group membership expiry (`group_expiry`).
    pub group_expiry: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            dir: PathBuf::from("/dev/shm"),
            channels: 1024,
            lanes: 128,
            members: 4096,
            lane_bytes: 256 * 1024,
            max_message: 64 * 1024,
            capacity: 100,
            channel_capacity: Vec::new(),
            expiry: Duration::from_secs(60),
            group_expiry: Duration::from_secs(86400),
        }
    }
}

impl Config {
    fn geometry(&self) -> Geometry {
        Geometry {
            channels: self.channels,
            lanes: self.lanes,
            members: self.members,
            lane_bytes: self.lane_bytes,
            max_message: self.max_message,
        }
    }

    /// The size in bytes of the segment this configuration makes: what
    /// [`Segment::create`] reserves in [`Config::dir`] up front (tables and
    /// `lanes * lane_bytes` of lane data). For reporting before creating.
    pub fn segment_size(&self) -> u64 {
        self.geometry().layout().total
    }
}

/// Removes what creators that are no longer running left in `dir`: a server
/// killed with SIGKILL cannot remove its segment, whose pages stay in the
/// tmpfs (RAM) until someone does. A creator holds an exclusive `flock` on
/// its segment file for as long as it runs (the kernel drops it however the
/// process ends), so a `ringway-<pid>-<hex>` file of this user that can be
/// `flock`ed is stale: it is removed with its doorbells
/// (`<segment>.bell.*`, `<segment>.reaper`). Doorbells whose segment file is
/// gone are removed too. The pid in the name is not consulted: it means
/// nothing across pid namespaces that share a `/dev/shm`. A file of size 0
/// is left alone (its creator may be between creating and locking it), and
/// so is a file that is not a segment of layout version 3 or later (whose
/// creators took no `flock`) while the pid in its name is a process.
/// Returns the files removed. [`Segment::create`] calls it.
pub fn remove_stale(dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return removed;
    };
    // SAFETY: plain syscall without arguments.
    let me = unsafe { libc::geteuid() };
    let ours: Vec<(PathBuf, bool)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let is_segment = segment_name(name.to_str()?)?;
            let meta = e.metadata().ok()?;
            (std::os::unix::fs::MetadataExt::uid(&meta) == me).then(|| (e.path(), is_segment))
        })
        .collect();
    let mut remove = |path: &Path| {
        if std::fs::remove_file(path).is_ok() {
            removed.push(path.to_owned());
        }
    };
    for (path, _) in ours.iter().filter(|(_, seg)| *seg) {
        let Ok(fd) = sys::open_read(path) else {
            continue;
        };
        // Someone holds it: its creator is running.
        if !matches!(sys::flock_exclusive(&fd, false), Ok(true)) {
            continue;
        }
        if sys::file_size(&fd).map_or(true, |n| n == 0) {
            continue;
        }
        // Creators of layout versions before 3 took no `flock`: for their
        // segments (and anything else under such a name) the pid in the
        // name is all there is to go by, as those versions did.
        if !flocking_layout(&fd) && creator_pid_alive(path) {
            continue;
        }
        // Unlinked while we hold the lock, so no creator can be using it.
        remove(path);
    }
    for (path, _) in ours.iter().filter(|(_, seg)| !*seg) {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let segment = path.with_file_name(name.split_once('.').map_or(name, |(s, _)| s));
        if !segment.exists() {
            remove(path);
        }
    }
    removed
}

/// Whether the file is a segment of a layout whose creator holds a `flock`
/// (version 3 on).
fn flocking_layout(fd: &OwnedFd) -> bool {
    let mut head = [0u8; 12];
    sys::read_at(fd, &mut head, 0).is_ok_and(|n| n == head.len())
        && head[..8] == MAGIC.to_le_bytes()
        && u32::from_le_bytes(head[8..12].try_into().expect("4 bytes")) >= 3
}

/// Whether the pid in a segment's file name names a process here.
fn creator_pid_alive(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let pid = name
        .strip_prefix("ringway-")
        .and_then(|r| r.split_once('-'))
        .map_or("", |(pid, _)| pid);
    Path::new("/proc").join(pid).exists()
}

/// Whether `name` is a segment's file name `ringway-<pid>-<24 hex digits>`
/// (`Some(true)`), one of its doorbells' (`<segment>.<suffix>`,
/// `Some(false)`), or neither (`None`).
fn segment_name(name: &str) -> Option<bool> {
    let rest = name.strip_prefix("ringway-")?;
    let (pid, rest) = rest.split_once('-')?;
    let (hex, suffix) = rest
        .split_once('.')
        .map_or((rest, None), |(h, s)| (h, Some(s)));
    if pid.is_empty()
        || !pid.bytes().all(|b| b.is_ascii_digit())
        || hex.len() != 24
        || !hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    Some(suffix.is_none())
}

/// A mapped segment. Cheap to clone; the mapping lives while any clone does.
/// Dropping the creator's last clone removes the file.
#[derive(Clone)]
pub struct Segment {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    map: Mapping,
    path: PathBuf,
    owner: bool,
    /// The creator's descriptor of the segment file, holding the exclusive
    /// `flock` that tells `remove_stale` the segment is in use. Workers
    /// never lock it.
    _lock_fd: Option<OwnedFd>,
    /// Endpoint slots attached through this mapping, by (index, generation):
    /// endpoints of this process, which the reaper never releases.
    local: Mutex<HashSet<(u32, u32)>>,
    /// The slot this mapping takes the segment lock as outside any
    /// `Endpoint` (the reaper's sweeps), attached on first use. The lock is
    /// taken as it only while `watches` is locked, so by one thread at a
    /// time.
    housekeeper: Mutex<Option<(u32, u32)>>,
    /// The reaper's pidfd watches (see `liveness.rs`).
    pub(crate) watches: Mutex<Watches>,
    /// Validated copy of the header's geometry.
    pub(crate) geo: Geometry,
    layout: Layout,
    pub(crate) default_capacity: u32,
    pub(crate) rules: Vec<(Vec<u8>, u32)>,
    pub(crate) message_expiry_ms: u64,
    pub(crate) group_expiry_ms: u64,
}

impl Segment {
    /// Creates a new segment file with an unguessable name, mode 0600.
    pub fn create(config: &Config) -> Result<Segment> {
        let geo = config.geometry();
        geo.validate().map_err(Error::Config)?;
        if config.capacity == 0 {
            return Err(Error::Config("capacity must be at least 1".into()));
        }
        for (what, d) in [
            ("expiry", config.expiry),
            ("group_expiry", config.group_expiry),
        ] {
            if d.as_millis() > u128::from(MAX_EXPIRY_MS) {
                return Err(Error::Config(format!(
                    "{what} of {d:?} is longer than the ten years a segment allows"
                )));
            }
        }
        if config.channel_capacity.len() > MAX_RULES {
            return Err(Error::Config(format!(
                "at most {MAX_RULES} channel_capacity rules"
            )));
        }
        let mut rules = [RuleSlot {
            pattern_len: 0,
            capacity: 0,
            pattern: [0; 104],
        }; MAX_RULES];
        for (slot, (pattern, cap)) in rules.iter_mut().zip(&config.channel_capacity) {
            if pattern.is_empty() || pattern.len() > MAX_NAME || *cap == 0 {
                return Err(Error::Config(format!(
                    "channel_capacity rule {pattern:?}: pattern must be 1 to {MAX_NAME} bytes and capacity at least 1"
                )));
            }
            slot.pattern_len = pattern.len() as u32;
            slot.capacity = *cap;
            slot.pattern[..pattern.len()].copy_from_slice(pattern.as_bytes());
        }
        let layout = geo.layout();
        remove_stale(&config.dir);
        let no_space = |available| Error::NoSpace {
            dir: config.dir.clone(),
            needed: layout.total,
            available,
        };
        // Fail before creating anything if the space is plainly not there.
        if let Ok(available) = sys::available_bytes(&config.dir) {
            if available < layout.total {
                return Err(no_space(available));
            }
        }
        let mut rand = [0u8; 12];
        sys::random_bytes(&mut rand).map_err(|e| Error::io("reading random bytes", e))?;
        let hex: String = rand.iter().map(|b| format!("{b:02x}")).collect();
        let path = config
            .dir
            .join(format!("ringway-{}-{hex}", std::process::id()));
        let fd = sys::open_rw(&path, true)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        // From here on a failure must remove the file.
        let cleanup = |e: Error| {
            sys::unlink(&path);
            e
        };
        // Before the file has a size, so `remove_stale` (which leaves empty
        // files alone) never removes a segment being created.
        sys::flock_exclusive(&fd, true)
            .map_err(|e| cleanup(Error::io(format!("locking {}", path.display()), e)))?;
        sys::ftruncate(&fd, layout.total).map_err(|e| {
            cleanup(Error::io(
                format!("sizing {} to {} bytes", path.display(), layout.total),
                e,
            ))
        })?;
        // Reserve every page now: a tmpfs that runs out of room later would
        // kill whoever touches a new page with SIGBUS, hours from now.
        match sys::fallocate(&fd, layout.total) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                let available = sys::available_bytes(&config.dir).unwrap_or(0);
                return Err(cleanup(no_space(available)));
            }
            // A filesystem that cannot reserve (not a tmpfs): the file stays
            // sparse, as it would have been.
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
            Err(e) => {
                return Err(cleanup(Error::io(
                    format!("reserving {} bytes for {}", layout.total, path.display()),
                    e,
                )))
            }
        }
        let map = Mapping::map(&fd, layout.total as usize)
            .map_err(|e| cleanup(Error::io(format!("mapping {}", path.display()), e)))?;
        let header = Header {
            magic: MAGIC,
            version: VERSION,
            arch: ARCH_TAG,
            header_size: std::mem::size_of::<Header>() as u32,
            ready: AtomicU32::new(0),
            total_size: layout.total,
            owner_pid: std::process::id(),
            channels: geo.channels,
            lanes: geo.lanes,
            members: geo.members,
            lane_bytes: geo.lane_bytes,
            max_message: geo.max_message,
            default_capacity: config.capacity,
            rule_count: config.channel_capacity.len() as u32,
            message_expiry_ms: config.expiry.as_millis() as u64,
            group_expiry_ms: config.group_expiry.as_millis() as u64,
            endpoints_off: layout.endpoints,
            channels_off: layout.channels,
            lane_ctrl_off: layout.lane_ctrl,
            members_off: layout.members,
            lane_data_off: layout.lane_data,
            rules,
            attach_epoch: AtomicU32::new(0),
            _reserved: 0,
            lock: CachePadded(LockWord::default()),
        };
        let hp = map.ptr().cast::<Header>();
        // SAFETY: the mapping is page-aligned and at least `layout.endpoints`
        // bytes long, which is at least `size_of::<Header>()`; nobody else has
        // the path yet, so nothing reads the header while we write it.
        unsafe { hp.write(header) };
        let seg = Segment {
            shared: Arc::new(Shared {
                map,
                path,
                owner: true,
                _lock_fd: Some(fd),
                local: Mutex::default(),
                housekeeper: Mutex::default(),
                watches: Mutex::default(),
                geo,
                layout,
                default_capacity: config.capacity,
                rules: config
                    .channel_capacity
                    .iter()
                    .map(|(p, c)| (p.as_bytes().to_vec(), *c))
                    .collect(),
                message_expiry_ms: config.expiry.as_millis() as u64,
                group_expiry_ms: config.group_expiry.as_millis() as u64,
            }),
        };
        // Release: publishes the header and the (zeroed) tables; pairs with
        // the Acquire load in `open`.
        seg.header().ready.store(1, Ordering::Release);
        Ok(seg)
    }

    /// Opens an existing segment, checking that it is one this build can use.
    pub fn open(path: impl AsRef<Path>) -> Result<Segment> {
        let path = path.as_ref().to_path_buf();
        let fd = sys::open_rw(&path, false)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let size = sys::file_size(&fd).map_err(|e| Error::io("reading the segment size", e))?;
        let hsize = std::mem::size_of::<Header>() as u64;
        if size < 16 {
            return Err(Error::Corrupt(format!(
                "{} is {size} bytes, too short for a segment header",
                path.display()
            )));
        }
        let map = Mapping::map(&fd, size as usize)
            .map_err(|e| Error::io(format!("mapping {}", path.display()), e))?;
        let base = map.ptr();
        // SAFETY: the mapping is at least 16 bytes and page-aligned.
        let (magic, version) =
            unsafe { (base.cast::<u64>().read(), base.add(8).cast::<u32>().read()) };
        if magic != MAGIC {
            return Err(Error::NotASegment(path));
        }
        if version != VERSION {
            return Err(Error::Version {
                found: version,
                expected: VERSION,
            });
        }
        if size < hsize {
            return Err(Error::Corrupt(format!(
                "{} is {size} bytes, shorter than its {hsize}-byte header (truncated?)",
                path.display()
            )));
        }
        // SAFETY: the mapping holds a whole, aligned Header; every field is
        // valid for any bit pattern (integers and atomics).
        let h = unsafe { &*base.cast::<Header>() };
        if h.arch != ARCH_TAG {
            return Err(Error::Architecture {
                found: h.arch,
                expected: ARCH_TAG,
            });
        }
        if h.header_size as u64 != hsize {
            return Err(Error::Corrupt(format!(
                "header size {} (expected {hsize})",
                h.header_size
            )));
        }
        // Acquire: pairs with the creator's Release store in `create`.
        if h.ready.load(Ordering::Acquire) != 1 {
            return Err(Error::NotReady);
        }
        let geo = Geometry {
            channels: h.channels,
            lanes: h.lanes,
            members: h.members,
            lane_bytes: h.lane_bytes,
            max_message: h.max_message,
        };
        geo.validate()
            .map_err(|e| Error::Corrupt(format!("header geometry: {e}")))?;
        let layout = geo.layout();
        if h.total_size != layout.total || size != layout.total {
            return Err(Error::Corrupt(format!(
                "{} is {size} bytes; its header says {} and its geometry needs {} (truncated?)",
                path.display(),
                h.total_size,
                layout.total
            )));
        }
        let offs = [
            h.endpoints_off,
            h.channels_off,
            h.lane_ctrl_off,
            h.members_off,
            h.lane_data_off,
        ];
        let want = [
            layout.endpoints,
            layout.channels,
            layout.lane_ctrl,
            layout.members,
            layout.lane_data,
        ];
        if offs != want {
            return Err(Error::Corrupt(format!(
                "region offsets {offs:?}, expected {want:?}"
            )));
        }
        if h.default_capacity == 0 || h.rule_count as usize > MAX_RULES {
            return Err(Error::Corrupt("capacity settings out of range".into()));
        }
        for (what, ms) in [
            ("message expiry", h.message_expiry_ms),
            ("group expiry", h.group_expiry_ms),
        ] {
            if ms > MAX_EXPIRY_MS {
                return Err(Error::Corrupt(format!(
                    "{what} of {ms} ms is beyond the {MAX_EXPIRY_MS} ms a segment allows"
                )));
            }
        }
        let mut rules = Vec::new();
        for r in &h.rules[..h.rule_count as usize] {
            if r.pattern_len as usize > MAX_NAME || r.capacity == 0 {
                return Err(Error::Corrupt("capacity rule out of range".into()));
            }
            rules.push((r.pattern[..r.pattern_len as usize].to_vec(), r.capacity));
        }
        Ok(Segment {
            shared: Arc::new(Shared {
                default_capacity: h.default_capacity,
                message_expiry_ms: h.message_expiry_ms,
                group_expiry_ms: h.group_expiry_ms,
                map,
                path,
                owner: false,
                _lock_fd: None,
                local: Mutex::default(),
                housekeeper: Mutex::default(),
                watches: Mutex::default(),
                geo,
                layout,
                rules,
            }),
        })
    }

    /// The segment file's path: hand it to the processes that should attach.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Removes the segment file (and its doorbells) now rather than when the
    /// creator's last handle drops; for a process about to exit without
    /// running destructors. Mapped handles keep working. Only the creator
    /// removes anything.
    pub fn remove_file(&self) {
        if self.shared.owner {
            sys::unlink(&self.shared.path);
            crate::wake::remove_bells(&self.shared.path);
        }
    }

    /// The geometry the segment was made with.
    pub fn geometry(&self) -> Geometry {
        self.shared.geo
    }

    pub(crate) fn header(&self) -> &Header {
        self.shared.header()
    }

    /// Counts of what the tables hold now (for `ringway-shm inspect`, metrics
    /// and tests). Read without the lock: a consistent snapshot only when the
    /// segment is idle.
    pub fn stats(&self) -> Stats {
        use crate::layout::{channel_state, endpoint_state, lane_state};
        let s = &*self.shared;
        let mut st = Stats::default();
        for i in 0..MAX_ENDPOINTS {
            st.endpoints +=
                usize::from(s.endpoint(i).state.load(Ordering::Relaxed) == endpoint_state::ACTIVE);
        }
        for i in 0..s.geo.channels as usize {
            st.channels +=
                usize::from(s.channel(i).state.load(Ordering::Relaxed) == channel_state::ACTIVE);
        }
        for i in 0..s.geo.lanes as usize {
            match s.lane_slot(i).meta.state.load(Ordering::Relaxed) {
                lane_state::ACTIVE => st.lanes_active += 1,
                lane_state::ORPHANED => st.lanes_orphaned += 1,
                lane_state::DETACHED => st.lanes_detached += 1,
                _ => {}
            }
        }
        for i in 0..s.geo.members as usize {
            st.memberships += usize::from(s.member(i).state.load(Ordering::Relaxed) == 1);
        }
        st
    }
}

/// What a segment's tables hold; see [`Segment::stats`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Attached endpoints.
    pub endpoints: usize,
    /// Channels in use.
    pub channels: usize,
    /// Lanes with a live producer.
    pub lanes_active: usize,
    /// Lanes of dead producers, waiting for their consumer to drain them.
    pub lanes_orphaned: usize,
    /// Lanes whose channel is gone, waiting for their producer to free them.
    pub lanes_detached: usize,
    /// Group memberships.
    pub memberships: usize,
}

impl Shared {
    fn at<T>(&self, off: u64, index: usize, count: usize) -> &T {
        assert!(index < count, "table index {index} out of {count}");
        let off = off as usize + index * std::mem::size_of::<T>();
        debug_assert!(off + std::mem::size_of::<T>() <= self.map.len());
        debug_assert!(off % std::mem::align_of::<T>() == 0);
        // SAFETY: `off` lies within the mapping (the layout was validated against
        // the file size, and `index < count` for the table's geometry); every
        // table starts page-aligned and the slot sizes are multiples of their
        // alignment; the slot types are atomics and integers, valid for any bit
        // pattern; the reference borrows `self`, which keeps the mapping alive.
        unsafe { &*self.map.ptr().add(off).cast::<T>() }
    }

    pub(crate) fn header(&self) -> &Header {
        // SAFETY: the mapping starts with a validated Header (see `at`).
        unsafe { &*self.map.ptr().cast::<Header>() }
    }

    pub(crate) fn endpoint(&self, i: usize) -> &EndpointSlot {
        self.at(self.layout.endpoints, i, MAX_ENDPOINTS)
    }

    pub(crate) fn channel(&self, i: usize) -> &ChannelSlot {
        self.at(self.layout.channels, i, self.geo.channels as usize)
    }

    pub(crate) fn lane_slot(&self, i: usize) -> &LaneSlot {
        self.at(self.layout.lane_ctrl, i, self.geo.lanes as usize)
    }

    pub(crate) fn member(&self, i: usize) -> &MemberSlot {
        self.at(self.layout.members, i, self.geo.members as usize)
    }

    /// Lane `i` as a ring.
    pub(crate) fn lane(&self, i: usize) -> Lane<'_> {
        let slot = self.lane_slot(i);
        let words = self.geo.lane_bytes as usize / 8;
        let off = self.layout.lane_data as usize + i * self.geo.lane_bytes as usize;
        debug_assert!(off + words * 8 <= self.map.len());
        // SAFETY: lane `i`'s data lies within the mapping (validated layout,
        // `i < lanes` checked by `lane_slot`), is page-aligned, and AtomicU64 is
        // valid for any bit pattern.
        let data = unsafe {
            std::slice::from_raw_parts(self.map.ptr().add(off).cast::<AtomicU64>(), words)
        };
        Lane::new(
            &slot.ctrl,
            data,
            LaneLimits {
                max_msgs: ring::MAX_LANE_MSGS,
                max_record: self.geo.max_record(),
            },
        )
    }

    /// The capacity for a channel name.
    pub(crate) fn capacity_for(&self, name: &[u8]) -> u32 {
        self.rules
            .iter()
            .find(|(p, _)| crate::names::glob_match(p, name))
            .map_or(self.default_capacity, |&(_, c)| c)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Attaches an endpoint slot for this process (without the lock; see
    /// `liveness.rs`) and tells a running reaper to watch it.
    pub(crate) fn attach(&self) -> Result<(u32, u32)> {
        let pid = std::process::id();
        let start = sys::process_start_time(pid)
            .ok_or_else(|| Error::io("reading /proc/self/stat", std::io::Error::last_os_error()))?;
        let (idx, gen) = liveness::claim(|i| self.endpoint(i), pid, start)
            .ok_or(Error::TableFull("endpoint"))?;
        self.local().insert((idx, gen));
        self.header().attach_epoch.fetch_add(1, Ordering::Relaxed);
        if let Ok(fd) = sys::open_fifo(&wake::reaper_bell_path(&self.path), false) {
            let _ = sys::ring_bell(fd.as_raw_fd());
        }
        Ok((idx, gen))
    }

    /// Frees the slot of endpoint `idx` of this process, after its channels,
    /// lanes and claims were given up (`repair::release_endpoint`), and
    /// after the segment lock was unlocked if it held it: a locker that
    /// found the lock held by a freed slot would take it over.
    pub(crate) fn detach(&self, idx: u32, gen: u32) {
        if self.local().remove(&(idx, gen)) {
            liveness::free(self.endpoint(idx as usize));
        }
    }

    /// Endpoints (index, generation) attached through this mapping.
    pub(crate) fn local(&self) -> MutexGuard<'_, HashSet<(u32, u32)>> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The lock id this mapping takes the segment lock as outside any
    /// endpoint, attaching a slot for it on first use.
    pub(crate) fn housekeeper(&self) -> Result<u32> {
        let mut hk = self.housekeeper.lock().unwrap_or_else(|e| e.into_inner());
        let (idx, gen) = match *hk {
            Some(id) => id,
            None => *hk.insert(self.attach()?),
        };
        Ok(liveness::lock_id(idx, gen))
    }

    /// Whether the endpoint a lock id names is attached and its process
    /// alive.
    fn owner_live(&self, holder: u32) -> bool {
        let Some((idx, bits)) = liveness::decode_lock_id(holder) else {
            return false;
        };
        let slot = self.endpoint(idx as usize);
        // Acquire: pairs with the Release store of ACTIVE in
        // `liveness::claim`, so `pid` and `start_time` are the endpoint's.
        if slot.state.load(Ordering::Acquire) != endpoint_state::ACTIVE {
            return false;
        }
        let gen = slot.generation.load(Ordering::Relaxed);
        if !liveness::gen_matches(gen, bits) {
            return false;
        }
        self.local().contains(&(idx, gen))
            || sys::process_alive(
                slot.pid.load(Ordering::Relaxed),
                slot.start_time.load(Ordering::Relaxed),
            )
    }

    /// Takes the segment lock as `me` (a lock id). If its owner died holding
    /// it, the lock is taken over and the result says so: the caller must
    /// repair the tables (`repair::lock` does). Errors: `LockTimeout`
    /// (`Wait`), `LockBusy` (`Try`, `Quick`).
    pub(crate) fn lock_raw(&self, me: u32, mode: LockMode) -> Result<(Locked<'_>, TakenOver)> {
        let lock = &self.header().lock;
        let deadline = Instant::now() + LOCK_TIMEOUT;
        let locked = || Locked {
            seg: self,
            me,
            _not_send: PhantomData,
        };
        loop {
            let holder = match lock.try_lock(me) {
                Ok(()) => return Ok((locked(), TakenOver::default())),
                Err(holder) => holder,
            };
            if mode == LockMode::Quick {
                return Err(Error::LockBusy);
            }
            // Our own id cannot be a live owner: an endpoint's lock is taken
            // by its one thread and never twice, the housekeeper's only
            // under the `watches` mutex. It is a value no one unlocked (a
            // scribble, or garbage in a corrupt header).
            if holder == me || !self.owner_live(holder) {
                if lock.take_over(holder, me) {
                    let taken = if holder == me {
                        // Repair, but there is no dead owner to release: the
                        // id is ours.
                        TakenOver {
                            happened: true,
                            endpoint: None,
                        }
                    } else {
                        self.dead_owner(holder)
                    };
                    return Ok((locked(), taken));
                }
                // Released or taken over meanwhile: look again.
                continue;
            }
            if mode == LockMode::Try {
                return Err(Error::LockBusy);
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(Error::LockTimeout);
            }
            // Futex timeouts are relative and measured on CLOCK_MONOTONIC,
            // as `Instant` is.
            lock.wait(holder, |h| {
                sys::futex_wait(&lock.word, h, Some(remaining.min(LOCK_RECHECK)))
            });
        }
    }

    /// The endpoint a dead lock owner's id names, if its slot still holds it.
    fn dead_owner(&self, holder: u32) -> TakenOver {
        let endpoint = liveness::decode_lock_id(holder).and_then(|(idx, bits)| {
            let slot = self.endpoint(idx as usize);
            let gen = slot.generation.load(Ordering::Relaxed);
            liveness::gen_matches(gen, bits).then_some((idx, gen))
        });
        TakenOver {
            happened: true,
            endpoint,
        }
    }
}

/// How a locker waits for the segment lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LockMode {
    /// Wait up to the lock timeout (2 s), then fail with `LockTimeout`. A
    /// dead owner is taken over.
    Wait,
    /// Try once: a live owner makes it fail with `LockBusy` at once, a dead
    /// one is taken over.
    Try,
    /// One CAS and nothing more (not even the owner check, which reads
    /// `/proc`): for housekeeping that can be left for later.
    Quick,
}

/// Whether the lock was taken over from a dead owner.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TakenOver {
    /// The lock was taken over: the tables must be repaired.
    pub(crate) happened: bool,
    /// The dead owner's endpoint (index, generation), if its slot still
    /// holds it: released by the repair.
    pub(crate) endpoint: Option<(u32, u32)>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The housekeeper slot holds nothing but itself (no channels, lanes
        // or doorbell): freeing the slot is all there is to release.
        if let Some((idx, gen)) = self.housekeeper.get_mut().ok().and_then(|h| h.take()) {
            self.detach(idx, gen);
        }
        if self.owner {
            sys::unlink(&self.path);
            crate::wake::remove_bells(&self.path);
        }
    }
}

/// Proof that the segment lock is held; unlocks on drop. Not `Send`: the
/// lock belongs to the endpoint that took it, which one thread uses.
pub(crate) struct Locked<'a> {
    pub(crate) seg: &'a Shared,
    /// Our lock id.
    me: u32,
    _not_send: PhantomData<*const ()>,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let word = &self.seg.header().lock;
        word.unlock(self.me, || sys::futex_wake_all(&word.word));
    }
}
