//! The mount-wide state every request reads: layers, options, the node table and open handles.
//!
//! Invariants: built once before the mount goes live; afterwards only the node table, the handle
//! tables and the passthrough switch change, each behind its own lock or atomic. The handle
//! tables' mutexes are leaves: held only to insert, find or remove an entry. `dev` is set once,
//! before requests are served; the `uring` mutex is taken only at INIT and once after the
//! handshake, which takes the queues out, and no other lock is held with it.

use anyhow::{Context, Result};
use fuser::{Errno, FileType};
use std::collections::HashMap;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::{Config, RedirectDir};
use crate::export::ROOT_ID;
use crate::layer::Layers;
use crate::node::{Loc, Node, Real};
use crate::nodetable::NodeTable;
use crate::work::WorkDir;
use crate::xattr::{self, OvlXattrs};

pub type OResult<T> = Result<T, Errno>;

/// The errno of a failed real system call.
pub fn errno(e: nix::errno::Errno) -> Errno {
    Errno::from_i32(e as i32)
}

/// The errno of a failed real I/O call.
pub fn io_errno(e: std::io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Open handles of one kind (files or directories), by FUSE file handle number.
pub struct HandleTable<T> {
    next: AtomicU64,
    map: Mutex<HashMap<u64, Arc<T>>>,
}

impl<T> Default for HandleTable<T> {
    fn default() -> Self {
        HandleTable {
            next: AtomicU64::new(1),
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> HandleTable<T> {
    pub fn insert(&self, value: T) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(fh, Arc::new(value));
        fh
    }

    pub fn get(&self, fh: u64) -> OResult<Arc<T>> {
        self.lock().get(&fh).cloned().ok_or(Errno::EBADF)
    }

    pub fn remove(&self, fh: u64) -> Option<Arc<T>> {
        self.lock().remove(&fh)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<T>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct Ovl {
    pub layers: Layers,
    /// Each layer's root directory, by layer index (for absolute redirects).
    pub roots: Vec<Arc<std::os::fd::OwnedFd>>,
    pub xattrs: OvlXattrs,
    pub nodes: NodeTable,
    pub files: HandleTable<crate::file::OpenFile>,
    pub dirs: HandleTable<crate::readdir::DirHandle>,
    pub timeout: Duration,
    pub read_only: bool,
    pub redirect_dir: RedirectDir,
    /// The work dir, when the mount is writable.
    pub work: Option<WorkDir>,
    /// The index dir `W/index` (hard-linked lower files copied up), when `index` is on.
    pub index: Option<Arc<std::os::fd::OwnedFd>>,
    /// Each layer's filesystem uuid (for `overlay.origin`), by layer index; zero when unknown.
    pub uuids: Vec<[u8; 16]>,
    /// Sync copied-up data and honour fsync (off with `volatile` or `fsync=0`).
    pub fsync: bool,
    /// FUSE passthrough was granted by the kernel and still works.
    pub passthrough: AtomicBool,
    /// The mount's /dev/fuse connection, for passthrough backing ids; set once the session
    /// exists, before it serves requests.
    pub dev: std::sync::OnceLock<Arc<std::os::fd::OwnedFd>>,
    /// The io_uring queues made ready for the kernel, one per possible CPU, when the
    /// `uring` option asked for them and io_uring works here (`uring/`); taken by the server
    /// once the kernel agreed to use them.
    pub uring: Mutex<Option<crate::uring::Queues>>,
    /// The export record, when NFS export is on (`record.rs`).
    pub record: Option<crate::record::Record>,
    /// The rename sequence: odd while a rename is under way, bumped before and after it, so a
    /// reconnecting walk (`reconnect.rs`) tells a racing rename from a gone directory.
    pub renames: AtomicU64,
    /// The daemon's lookup caches.
    pub caches: crate::cache::Caches,
    /// Looks up the entries of a listing's next reply in the background (`ahead.rs`).
    pub listahead: crate::ahead::Worker,
    /// Kernel invalidations waiting for the notify worker.
    pub notify: crate::notify::Notify,
    /// The upper-layer watch.
    pub watch: crate::watch::Watch,
    /// The private mount the upper layer is reached through with `strictatime`
    /// (`layer::atime_view`); kept for the mount's life.
    _atime_view: Option<std::os::fd::OwnedFd>,
    /// Mounted `noatime`: reads of real files do not update their atime.
    pub noatime: bool,
    /// Owner mapping and squashing (`idmap.rs`).
    pub ids: crate::idmap::IdMap,
    /// Whether to watch the upper layer (`watch=`).
    pub watch_upper: bool,
    /// READDIRPLUS entries with attributes per listing, past which (where the transport can)
    /// entries go by name alone; `usize::MAX` for all (`plus_entries=`).
    pub plus_entries: usize,
    /// Whether `open_by_handle_at` works (root in the initial user namespace): origins are
    /// opened to check them. Else their inode numbers are read from the handles (`export.rs`).
    pub open_handles: bool,
    /// By layer index: whether the layer's real file handles carry inode numbers that plyfs
    /// can read (`export::handles_carry_ino`).
    pub ino_handles: Vec<bool>,
    /// Whether owner overrides are read and written (`override_stat.rs`).
    pub overrides: crate::override_stat::Mode,
    /// How the upper filesystem owns what the daemon makes (`dir.rs`).
    pub maker: crate::dir::Maker,
}

/// Whether plyfs may use `trusted.*` xattrs. Not in a user namespace (rootless podman runs
/// plyfs as its uid 0, without CAP_SYS_ADMIN in the initial namespace): there it falls back to
/// `user.overlay.*`, as fuse-overlayfs does, instead of failing every change with EPERM. With a
/// work dir, a probe xattr decides; without one, whether the process is in a user namespace.
fn trusted_xattrs_work(cfg: &Config) -> bool {
    let probe = c"trusted.overlay.plyfs-probe";
    let answer = match cfg.work.as_deref().filter(|_| !cfg.is_read_only()) {
        Some(w) => match std::fs::File::open(w) {
            Ok(dir) => {
                let fd = AsFd::as_fd(&dir);
                let ok = crate::realops::set_xattr(fd, c"", probe, b"y", 0).is_ok();
                let _ = crate::realops::remove_xattr(fd, c"", probe);
                ok
            }
            Err(_) => true, // the work dir's own checks report it
        },
        None => std::fs::read_to_string("/proc/self/uid_map")
            .map(|m| m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"])
            .unwrap_or(true),
    };
    if !answer && !cfg.userxattr {
        tracing::info!("trusted.* xattrs are not allowed here: using user.overlay.* (userxattr)");
    }
    answer
}

/// Whether NFS export can and should be on: it needs `open_by_handle_at` (root, i.e.
/// `CAP_DAC_READ_SEARCH`) and file handles on every layer. On by default where it works;
/// `nfs_export=on` where it cannot work is an error, `nfs_export=off` turns it off.
fn export_on(cfg: &Config, layers: &Layers) -> Result<bool> {
    if cfg.nfs_export == Some(false) {
        return Ok(false);
    }
    let why_not = if !nix::unistd::geteuid().is_root() {
        Some("file handles need root (CAP_DAC_READ_SEARCH)".to_string())
    } else {
        layers.all.iter().find_map(|l| {
            let fd = l.handle_fd.as_ref()?;
            let res =
                crate::sys::handle::name_to_handle_at(fd.as_fd(), c"", 0).and_then(|(h, _)| {
                    crate::sys::handle::open_by_handle_at(fd.as_fd(), &h, libc::O_PATH)
                });
            res.err()
                .map(|e| format!("layer '{}' has no file handles: {e}", l.path.display()))
        })
    };
    match (why_not, cfg.nfs_export) {
        (None, _) => Ok(true),
        (Some(why), Some(true)) => anyhow::bail!("nfs_export=on: {why}"),
        (Some(why), _) => {
            tracing::info!("nfs_export is off: {why}");
            Ok(false)
        }
    }
}

impl Ovl {
    pub fn new(cfg: &Config) -> Result<Ovl> {
        let (cfg, atime_view) = crate::layer::atime_view(cfg);
        let cfg = &cfg;
        let layers = Layers::open(cfg)?;
        let xattrs = OvlXattrs::new(cfg.userxattr || !trusted_xattrs_work(cfg));
        let mut reals = Vec::new();
        let mut roots = Vec::new();
        for l in &layers.all {
            let fd = l
                .root
                .try_clone()
                .with_context(|| format!("cannot use layer '{}'", l.path.display()))?;
            let st = nix::sys::stat::fstat(&fd)?;
            // Opaque is ignored on layer roots; "x" still marks a root holding xattr whiteouts.
            let mark = xattr::read_small(std::os::fd::AsFd::as_fd(&l.root), c"", &xattrs.opaque)?;
            let fd = Arc::new(fd);
            roots.push(fd.clone());
            reals.push(
                Real::new(l.index, Loc::Dir(fd), st.st_ino)
                    .marks(false, mark.as_deref() == Some(b"x")),
            );
        }
        let uuids = layers
            .all
            .iter()
            .map(|l| {
                std::fs::File::open(&l.path)
                    .and_then(|f| crate::sys::handle::fs_uuid(std::os::fd::AsFd::as_fd(&f)))
                    .unwrap_or([0; 16])
            })
            .collect();
        let work = match (&cfg.work, cfg.is_read_only()) {
            (Some(w), false) => Some(WorkDir::open(w)?),
            _ => None,
        };
        // The index needs file handles (root): on by default where they work.
        let index_on = cfg
            .index
            .unwrap_or_else(|| nix::unistd::geteuid().is_root());
        let index = match (&cfg.work, &work) {
            (Some(w), Some(_)) if index_on => Some(Arc::new(crate::work::open_index(w)?)),
            _ => None,
        };
        let record = match export_on(cfg, &layers)? {
            true => {
                let fs_count = layers.all.iter().map(|l| l.fs_index).max().unwrap_or(0) + 1;
                let dir = work.as_ref().and(cfg.work.as_deref());
                Some(crate::record::Record::open(dir, fs_count.into())?)
            }
            false => None,
        };
        let ids = {
            let ids = crate::idmap::IdMap::new(cfg);
            let idmapped = layers
                .all
                .iter()
                .find(|l| crate::layer::is_idmapped(l.root.as_fd()));
            match idmapped {
                Some(l) if ids.maps_ids() => {
                    tracing::info!(
                        layer = %l.path.display(),
                        "layers on idmapped mounts: uidmapping/gidmapping not applied again"
                    );
                    ids.without_mapping()
                }
                _ => ids,
            }
        };
        let overrides = crate::override_stat::Mode::new(
            xattrs.prefix.starts_with(b"user."),
            layers
                .all
                .iter()
                .any(|l| crate::override_stat::marks_layer(l.root.as_fd())),
            !cfg.is_read_only() && cfg.upper.is_some(),
        );
        if overrides.read {
            tracing::debug!(?overrides, "owner overrides (override_stat xattrs)");
        }
        let open_handles = crate::export::can_open_handles(&layers);
        let ino_handles = layers
            .all
            .iter()
            .zip(&reals)
            .map(|(l, r)| crate::export::handles_carry_ino(l.root.as_fd(), r.ino))
            .collect();
        let nodes = NodeTable::default();
        nodes.insert_root(Node::new(
            ROOT_ID,
            FileType::Directory,
            reals,
            ROOT_ID,
            c"/".into(),
        ));
        Ok(Ovl {
            layers,
            roots,
            xattrs,
            nodes,
            files: HandleTable::default(),
            dirs: HandleTable::default(),
            timeout: cfg.timeout,
            read_only: cfg.is_read_only(),
            redirect_dir: if cfg.upper.is_none() && cfg.redirect_dir == RedirectDir::Follow {
                RedirectDir::On
            } else {
                cfg.redirect_dir
            },
            work,
            index,
            uuids,
            fsync: cfg.fsync && !cfg.volatile,
            passthrough: AtomicBool::new(false),
            dev: std::sync::OnceLock::new(),
            uring: Mutex::new(None),
            record,
            renames: AtomicU64::new(0),
            caches: crate::cache::Caches::new(cfg.cache_entries, !cfg.drop_negative_lower),
            listahead: Default::default(),
            notify: Default::default(),
            watch: Default::default(),
            _atime_view: atime_view,
            noatime: cfg
                .kernel_flags
                .iter()
                .rev()
                .find_map(|f| match f {
                    crate::config::KernelFlag::Atime(on) => Some(!on),
                    _ => None,
                })
                .unwrap_or(false),
            ids,
            watch_upper: cfg.watch,
            plus_entries: match cfg.plus_entries {
                0 => usize::MAX,
                n => n,
            },
            open_handles,
            ino_handles,
            overrides,
            maker: crate::dir::Maker::current(),
        })
    }

    /// Registers `file` as a passthrough backing file with the kernel.
    pub fn open_backing(
        &self,
        file: std::os::fd::BorrowedFd,
    ) -> std::io::Result<crate::sys::backing::BackingId> {
        let dev = self.dev.get().ok_or(std::io::ErrorKind::NotConnected)?;
        crate::sys::backing::BackingId::open(dev, file)
    }

    /// Whether NFS export (persistent FUSE file handles) is on.
    pub fn exporting(&self) -> bool {
        self.record.is_some()
    }

    /// The work dir of a writable mount.
    pub fn writable_work(&self) -> Option<&WorkDir> {
        self.work.as_ref()
    }

    /// The node the kernel names by `id`.
    pub fn node(&self, id: u64) -> OResult<Arc<Node>> {
        self.nodes.get(id).ok_or(Errno::ESTALE)
    }

    /// The node id of a real object found in `layer` with inode number `ino`.
    pub fn id_of(&self, layer: usize, ino: u64) -> u64 {
        self.nodes.id_for(self.layers.get(layer).fs_index, ino)
    }

    /// The node id of an object from its real objects (topmost first), found in directory
    /// node `parent`, by the origin rule of `export.rs`: an upper object takes its
    /// `overlay.origin`'s, a directory merging an upper dir with lower ones the topmost
    /// lower's, anything else its own.
    pub fn id_of_reals(&self, kind: FileType, reals: &[Real], parent: &Node) -> u64 {
        let top = &reals[0];
        if self.layers.is_upper(top.layer()) {
            if let [_, below, ..] = reals {
                if kind == FileType::Directory {
                    return self.id_of(below.layer(), below.ino);
                }
            }
            let (dir, name) = top.at();
            if let Some((layer, ino)) =
                crate::export::upper_origin(self, dir, name, top.ino, kind, &parent.reals())
            {
                return self.id_of(layer, ino);
            }
        }
        self.id_of(top.layer(), top.ino)
    }
}
