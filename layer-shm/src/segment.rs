//! Creating, opening and mapping a segment; typed access to its tables; the
//! segment lock.

use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::layout::{
    ChannelSlot, EndpointSlot, Geometry, Header, LaneSlot, Layout, MemberSlot, RuleSlot, ARCH_TAG,
    MAGIC, MAX_ENDPOINTS, MAX_NAME, MAX_RULES, VERSION,
};
use crate::ring::{self, Lane, LaneLimits};
use crate::sync::CachePadded;
use crate::sys::{self, Mapping};

/// The longest message or group expiry a segment takes: ten years, far
/// beyond any sensible setting and far from overflowing a deadline.
pub const MAX_EXPIRY_MS: u64 = 10 * 366 * 86_400_000;

/// How long a table change waits for the segment lock before giving up.
const LOCK_TIMEOUT: Duration = Duration::from_secs(2);

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
    /// Bytes of each lane's data area (a power of two; the file is sparse, so
    /// only what is written costs memory).
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
            lanes: 256,
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
}

/// Removes what creators that are no longer running left in `dir`: a server
/// killed with SIGKILL cannot remove its segment, whose written pages stay in
/// the tmpfs (RAM) until someone does. Removed are files named
/// `ringway-<pid>-<hex>` and their doorbells (`<segment>.bell.*`,
/// `<segment>.reaper`), owned by this user, whose `<pid>` is not a process
/// now. A pid that names a live process, even an unrelated one that reused
/// it, keeps its files: a segment someone may still use is never removed.
/// (This assumes one pid namespace per `dir`, as a container's private
/// `/dev/shm` is.) Returns the files removed. [`Segment::create`] calls it.
pub fn remove_stale(dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return removed;
    };
    // SAFETY: plain syscall without arguments.
    let me = unsafe { libc::geteuid() };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(creator_pid) else {
            continue;
        };
        let ours = std::os::unix::fs::MetadataExt::uid(&match e.metadata() {
            Ok(m) => m,
            Err(_) => continue,
        }) == me;
        if ours && pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists() {
            let path = e.path();
            if std::fs::remove_file(&path).is_ok() {
                removed.push(path);
            }
        }
    }
    removed
}

/// The creator's pid in a segment's (or doorbell's) file name
/// `ringway-<pid>-<24 hex digits>[.<suffix>]`; `None` for any other name.
fn creator_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("ringway-")?;
    let (pid, rest) = rest.split_once('-')?;
    let hex = rest.split_once('.').map_or(rest, |(h, _)| h);
    if hex.len() != 24 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    pid.parse().ok()
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
        sys::ftruncate(&fd, layout.total).map_err(|e| {
            cleanup(Error::io(
                format!("sizing {} to {} bytes", path.display(), layout.total),
                e,
            ))
        })?;
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
            // SAFETY: pthread_mutex_t is plain data; it is initialised below
            // before the segment is published.
            lock: CachePadded(UnsafeCell::new(unsafe { std::mem::zeroed() })),
        };
        let hp = map.ptr().cast::<Header>();
        // SAFETY: the mapping is page-aligned and at least `layout.endpoints`
        // bytes long, which is at least `size_of::<Header>()`; nobody else has
        // the path yet, so nothing reads the header while we write it.
        unsafe { hp.write(header) };
        // SAFETY: `lock` lies inside the header just written; unused so far.
        unsafe { sys::robust::init((*hp).lock.get()) }
            .map_err(|e| cleanup(Error::io("initialising the segment lock", e)))?;
        let seg = Segment {
            shared: Arc::new(Shared {
                map,
                path,
                owner: true,
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
        // valid for any bit pattern (integers, atomics, a mutex we only use
        // after validation).
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

    /// Takes the segment lock and never lets go: for tests that kill a
    /// process while it holds the lock. Blocks forever.
    #[doc(hidden)]
    pub fn hold_lock_forever_for_tests(&self) -> Result<std::convert::Infallible> {
        let g = self.shared.lock()?;
        std::mem::forget(g);
        println!("locked");
        let _ = std::io::Write::flush(&mut std::io::stdout());
        loop {
            std::thread::park();
        }
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

    /// Takes the segment lock. If its previous holder died holding it, repairs
    /// the tables first (see `reaper::sweep`).
    pub(crate) fn lock(&self) -> Result<Locked<'_>> {
        let m = self.header().lock.get();
        // SAFETY: the mutex was initialised by the creator before `ready` was
        // set, and the mapping outlives the guard (it borrows `self`).
        match unsafe { sys::robust::lock(m, LOCK_TIMEOUT) } {
            Ok(sys::robust::Locked::Clean) => Ok(Locked {
                seg: self,
                _not_send: PhantomData,
            }),
            Ok(sys::robust::Locked::OwnerDied) => {
                let guard = Locked {
                    seg: self,
                    _not_send: PhantomData,
                };
                crate::reaper::sweep(&guard, &mut crate::reaper::ReapReport::default());
                Ok(guard)
            }
            Err(e) if e.raw_os_error() == Some(libc::ETIMEDOUT) => Err(Error::LockTimeout),
            Err(e) => Err(Error::io("taking the segment lock", e)),
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if self.owner {
            sys::unlink(&self.path);
            crate::wake::remove_bells(&self.path);
        }
    }
}

/// Proof that the segment lock is held; unlocks on drop. Not `Send`: a pthread
/// mutex must be unlocked by the thread that locked it.
pub(crate) struct Locked<'a> {
    pub(crate) seg: &'a Shared,
    _not_send: PhantomData<*const ()>,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // SAFETY: this guard exists only while this thread holds the lock.
        unsafe { sys::robust::unlock(self.seg.header().lock.get()) };
    }
}
