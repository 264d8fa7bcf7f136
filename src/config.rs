//! The command line and mount options, parsed into one [`Config`], and the checks made before
//! anything is mounted.
//!
//! Invariants: parsing never touches the filesystem; [`Config::validate`] only reads it. Every
//! error is one line that names the option or path at fault. An option plyfs does not know is an
//! error, never a silent ignore.

use anyhow::{anyhow, bail, Context, Result};
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default kernel entry/attribute cache time: layers only change through the mount.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default number of FUSE worker threads.
pub const DEFAULT_THREADS: usize = 4;
/// The most lower layers a mount takes, as the kernel's overlay (`OVL_MAX_STACK`).
pub const MAX_LOWERS: usize = 500;

/// What the command line asks for.
#[derive(Debug)]
pub enum Action {
    Mount(Box<Config>),
    Version,
    Help,
}

/// The default `plus_entries`: directories up to this size are listed with attributes from
/// the start; a 100k-entry `ls -f` makes 1024 inodes, not 100k (ovbench readdir-large 1.5-1.8
/// of the kernel's overlay instead of 8-9, the daemon's RSS after a full walk 22 MiB instead
/// of 38), and a second walk of such a directory pays for listing it in full.
pub const DEFAULT_PLUS_ENTRIES: usize = 1024;

/// One range of an id mapping: `count` ids from `inner` (in the container) map to `outer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub inner: u32,
    pub outer: u32,
    pub count: u32,
}

/// A mount flag passed on to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFlag {
    Dev(bool),
    Suid(bool),
    Exec(bool),
    Atime(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectDir {
    On,
    Follow,
    NoFollow,
    Off,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Lower layers, topmost first.
    pub lowers: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
    pub mountpoint: PathBuf,
    /// The source argument of the mount.fuse form, if given.
    pub source: Option<String>,
    pub foreground: bool,
    pub debug: bool,
    pub read_only: bool,
    /// `strictatime`: every read updates the atime of an upper file (the upper layer is reached
    /// through a private clone of its mount with strict atime, as the kernel's overlay does).
    pub strictatime: bool,
    pub volatile: bool,
    pub fsync: bool,
    pub squash_uid: Option<u32>,
    pub squash_gid: Option<u32>,
    pub uid_map: Vec<IdRange>,
    pub gid_map: Vec<IdRange>,
    /// Private xattrs in `user.` instead of `trusted.` (rootless).
    pub userxattr: bool,
    pub xino: Option<bool>,
    pub redirect_dir: RedirectDir,
    pub index: Option<bool>,
    pub nfs_export: Option<bool>,
    pub timeout: Duration,
    pub threads: usize,
    pub allow_other: bool,
    pub allow_root: bool,
    pub fsname: Option<String>,
    pub subtype: Option<String>,
    pub kernel_flags: Vec<KernelFlag>,
    pub drop_negative_lower: bool,
    /// Watch the upper layer for changes made underneath (`watch.rs`); on by default.
    pub watch: bool,
    /// Serve requests through FUSE io_uring queues where the kernel offers them.
    pub uring: bool,
    /// The io_uring threads at idle priority while their CPUs are free (`uring/handoff.rs`).
    pub uring_idle: bool,
    /// Bound of the daemon's lookup caches (`cache.rs`), in entries.
    pub cache_entries: usize,
    /// How many entries of a directory's first listing READDIRPLUS gives with attributes
    /// (0: all); `ops::readdirplus` says why.
    pub plus_entries: usize,
    pub noxattrs: bool,
}

impl Config {
    fn new(mountpoint: PathBuf) -> Config {
        Config {
            lowers: Vec::new(),
            upper: None,
            work: None,
            mountpoint,
            source: None,
            foreground: false,
            debug: false,
            read_only: false,
            strictatime: false,
            volatile: false,
            fsync: true,
            squash_uid: None,
            squash_gid: None,
            uid_map: Vec::new(),
            gid_map: Vec::new(),
            userxattr: false,
            xino: None,
            redirect_dir: RedirectDir::On,
            index: None,
            nfs_export: None,
            timeout: DEFAULT_TIMEOUT,
            threads: DEFAULT_THREADS,
            allow_other: false,
            allow_root: false,
            fsname: None,
            subtype: None,
            kernel_flags: Vec::new(),
            drop_negative_lower: false,
            watch: true,
            uring: true,
            uring_idle: true,
            cache_entries: crate::cache::DEFAULT_ENTRIES,
            plus_entries: DEFAULT_PLUS_ENTRIES,
            noxattrs: false,
        }
    }

    /// True when there is no upper layer or `ro` was given.
    pub fn is_read_only(&self) -> bool {
        self.read_only || self.upper.is_none()
    }

    /// The source shown in /proc/mounts.
    pub fn fs_name(&self) -> String {
        self.fsname
            .clone()
            .or_else(|| self.source.clone())
            .unwrap_or_else(|| "plyfs".to_string())
    }

    /// Checks the layers and the mount point on disk. Reads only.
    pub fn validate(&self) -> Result<()> {
        if self.lowers.is_empty() {
            bail!("missing lowerdir= option");
        }
        for lower in &self.lowers {
            check_dir("lowerdir", lower)?;
        }
        match (&self.upper, &self.work) {
            (Some(_), None) => bail!("upperdir= needs workdir="),
            (None, Some(_)) => bail!("workdir= needs upperdir="),
            (Some(upper), Some(work)) => {
                let u = check_dir("upperdir", upper)?;
                let w = check_dir("workdir", work)?;
                if u.dev() != w.dev() {
                    bail!(
                        "upperdir '{}' and workdir '{}' are on different filesystems",
                        upper.display(),
                        work.display()
                    );
                }
                let (cu, cw) = (upper.canonicalize()?, work.canonicalize()?);
                if cw.starts_with(&cu) {
                    bail!(
                        "workdir '{}' is inside upperdir '{}'",
                        work.display(),
                        upper.display()
                    );
                }
                if cu.starts_with(&cw) {
                    bail!(
                        "upperdir '{}' is inside workdir '{}'",
                        upper.display(),
                        work.display()
                    );
                }
            }
            (None, None) => {}
        }
        check_dir("mount point", &self.mountpoint)?;
        let mnt = self.mountpoint.canonicalize()?;
        for layer in self.lowers.iter().chain(&self.upper).chain(&self.work) {
            let l = layer.canonicalize()?;
            if mnt != l && mnt.starts_with(&l) {
                bail!(
                    "mount point '{}' is inside layer '{}'",
                    self.mountpoint.display(),
                    layer.display()
                );
            }
        }
        Ok(())
    }
}

fn check_dir(what: &str, path: &Path) -> Result<std::fs::Metadata> {
    let md = std::fs::metadata(path).with_context(|| format!("{what} '{}'", path.display()))?;
    if !md.is_dir() {
        bail!("{what} '{}' is not a directory", path.display());
    }
    Ok(md)
}

pub const USAGE: &str = "\
usage: plyfs [-f] [-d] -o lowerdir=TOP:...:BOTTOM[,upperdir=U,workdir=W][,OPTIONS] MOUNTPOINT
       plyfs SOURCE MOUNTPOINT -o OPTIONS      (mount.fuse form)
       plyfs --version | --help

Layer options:
  lowerdir=A:B:C         lower layers, topmost first (\\: escapes a colon)
  upperdir=U,workdir=W   read-write upper layer and its work dir (same filesystem)
Options:
  timeout=SECS           kernel entry/attribute cache time (default 3600; 0 disables)
  threads=N              FUSE worker threads (default 4)
  userxattr              private xattrs in user.overlay.* (rootless) instead of trusted.overlay.*
  redirect_dir=on|follow|nofollow|off, xino=on|off|auto, index=on|off, nfs_export=on|off
  volatile, fsync=0|1, squash_to_root, squash_to_uid=N, squash_to_gid=N
  uidmapping=C:H:N[:C:H:N...], gidmapping=...   id mapping (containers-storage form)
  drop_negative_lower    do not keep negative lookups of lower layers
  cache_entries=N        bound of the daemon's lookup caches, in entries (default 16384)
  plus_entries=N         through io_uring, list entries past the first N of a directory by name
                         alone on its first listing (no inode per entry for a huge `ls`); the
                         next listing gives all with attributes (default 1024; 0: all, always)
  watch=on|off           pick up changes made in the upper dir underneath the mount (default on)
  uring=on|off           requests through FUSE io_uring queues, one per CPU, where the kernel
                         offers them (fuse module parameter enable_uring=Y; default on)
  uring_idle=on|off      those threads at idle priority while no other task wants their CPU, so a
                         caller keeps its CPU across a request (default on)
  allow_other, allow_root, default_permissions, ro, rw, fsname=NAME, subtype=NAME
  dev, nodev, suid, nosuid, exec, noexec, atime, noatime (passed to the kernel)
  relatime, strictatime  when reads update an upper file's atime (default: as the upper fs)
  -f                     stay in the foreground
  -d                     debug log to stderr (implies -f)
";

/// Parses the arguments after the program name.
pub fn parse_args(args: &[OsString]) -> Result<Action> {
    let mut opts: Vec<String> = Vec::new();
    let mut positional: Vec<OsString> = Vec::new();
    let (mut foreground, mut debug, mut single) = (false, false, false);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let s = arg.to_string_lossy();
        match s.as_ref() {
            "--version" | "-V" => return Ok(Action::Version),
            "--help" | "-h" => return Ok(Action::Help),
            "-f" => foreground = true,
            "-d" | "--debug" => debug = true,
            "-s" => single = true,
            "-o" => {
                let v = it
                    .next()
                    .ok_or_else(|| anyhow!("option -o needs a value"))?;
                opts.push(os_to_string(v)?);
            }
            _ if s.starts_with("-o") => opts.push(os_to_string(arg)?[2..].to_string()),
            _ if s.starts_with('-') && s.len() > 1 => bail!("unknown command line option '{s}'"),
            _ => positional.push(arg.clone()),
        }
    }
    let (source, mountpoint) = match positional.len() {
        0 => bail!("missing mount point (see plyfs --help)"),
        1 => (None, positional.pop().unwrap()),
        2 => {
            let mnt = positional.pop().unwrap();
            (Some(os_to_string(&positional[0])?), mnt)
        }
        _ => bail!(
            "too many arguments: '{}' (see plyfs --help)",
            positional[2].to_string_lossy()
        ),
    };
    let mut cfg = Config::new(PathBuf::from(mountpoint));
    cfg.source = source;
    cfg.foreground = foreground || debug;
    cfg.debug = debug;
    for o in &opts {
        for opt in split_unescaped(o, ',') {
            apply_option(&mut cfg, &opt)?;
        }
    }
    if single {
        cfg.threads = 1;
    }
    Ok(Action::Mount(Box::new(cfg)))
}

fn os_to_string(s: &OsString) -> Result<String> {
    s.clone()
        .into_string()
        .map_err(|s| anyhow!("argument is not valid UTF-8: {}", s.to_string_lossy()))
}

/// Splits on `sep` where it is not escaped by a backslash; escapes are kept for the next level.
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.last_mut().unwrap().push(c);
            if let Some(n) = chars.next() {
                out.last_mut().unwrap().push(n);
            }
        } else if c == sep {
            out.push(String::new());
        } else {
            out.last_mut().unwrap().push(c);
        }
    }
    out
}

/// Removes the backslash escapes (`\:`, `\,`, `\\`).
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn parse_bool(key: &str, v: &str) -> Result<bool> {
    match v {
        "on" | "1" | "yes" | "true" => Ok(true),
        "off" | "0" | "no" | "false" => Ok(false),
        _ => bail!("option {key}= expects on or off, not '{v}'"),
    }
}

fn parse_num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T> {
    v.parse()
        .map_err(|_| anyhow!("option {key}= expects a number, not '{v}'"))
}

/// Parses `C:H:N[:C:H:N...]`, with the leading colon containers-storage adds.
fn parse_id_map(key: &str, v: &str) -> Result<Vec<IdRange>> {
    let v = v.strip_prefix(':').unwrap_or(v);
    let nums = v
        .split(':')
        .map(|n| parse_num::<u32>(key, n))
        .collect::<Result<Vec<_>>>()?;
    if nums.is_empty() || nums.len() % 3 != 0 {
        bail!("option {key}= expects container:host:count triplets, not '{v}'");
    }
    Ok(nums
        .chunks(3)
        .map(|c| IdRange {
            inner: c[0],
            outer: c[1],
            count: c[2],
        })
        .collect())
}

fn need<'a>(key: &str, v: Option<&'a str>) -> Result<&'a str> {
    v.ok_or_else(|| anyhow!("option {key}= needs a value"))
}

fn apply_option(cfg: &mut Config, opt: &str) -> Result<()> {
    let opt = opt.trim();
    if opt.is_empty() {
        return Ok(());
    }
    let (key, val) = match opt.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (opt, None),
    };
    let flag = |v: Option<&str>| match v {
        None => Ok(()),
        Some(_) => Err(anyhow!("option {key} takes no value")),
    };
    match key {
        "lowerdir" => {
            let v = need(key, val)?;
            cfg.lowers = split_unescaped(v, ':')
                .into_iter()
                .filter(|l| !l.is_empty())
                .map(|l| PathBuf::from(unescape(&l)))
                .collect();
            if cfg.lowers.is_empty() {
                bail!("option lowerdir= names no directory");
            }
            if cfg.lowers.len() > MAX_LOWERS {
                bail!(
                    "option lowerdir= names {} directories, more than the {MAX_LOWERS} lower layers a mount takes",
                    cfg.lowers.len()
                );
            }
        }
        "upperdir" => cfg.upper = Some(PathBuf::from(unescape(need(key, val)?))),
        "workdir" => cfg.work = Some(PathBuf::from(unescape(need(key, val)?))),
        "volatile" => {
            flag(val)?;
            cfg.volatile = true;
        }
        "fsync" => cfg.fsync = parse_bool(key, need(key, val)?)?,
        "noxattrs" => cfg.noxattrs = parse_bool(key, need(key, val)?)?,
        "squash_to_root" => {
            flag(val)?;
            cfg.squash_uid = Some(0);
            cfg.squash_gid = Some(0);
        }
        "squash_to_uid" => cfg.squash_uid = Some(parse_num(key, need(key, val)?)?),
        "squash_to_gid" => cfg.squash_gid = Some(parse_num(key, need(key, val)?)?),
        "uidmapping" => cfg.uid_map = parse_id_map(key, need(key, val)?)?,
        "gidmapping" => cfg.gid_map = parse_id_map(key, need(key, val)?)?,
        "userxattr" => {
            flag(val)?;
            cfg.userxattr = true;
        }
        "xino" => {
            cfg.xino = match need(key, val)? {
                "auto" => None,
                v => Some(parse_bool(key, v)?),
            }
        }
        "redirect_dir" => {
            cfg.redirect_dir = match need(key, val)? {
                "on" => RedirectDir::On,
                "follow" => RedirectDir::Follow,
                "nofollow" => RedirectDir::NoFollow,
                "off" => RedirectDir::Off,
                v => bail!("option redirect_dir= expects on, follow, nofollow or off, not '{v}'"),
            }
        }
        "index" => cfg.index = Some(parse_bool(key, need(key, val)?)?),
        "nfs_export" => cfg.nfs_export = Some(parse_bool(key, need(key, val)?)?),
        "timeout" | "entry_timeout" | "attr_timeout" => {
            let secs: f64 = parse_num(key, need(key, val)?)?;
            if !(0.0..=1e9).contains(&secs) {
                bail!("option {key}= must be between 0 and 1e9 seconds");
            }
            cfg.timeout = Duration::from_secs_f64(secs);
        }
        "threads" => {
            cfg.threads = parse_num(key, need(key, val)?)?;
            if cfg.threads == 0 || cfg.threads > 1024 {
                bail!("option threads= must be between 1 and 1024");
            }
        }
        "plus_entries" => cfg.plus_entries = parse_num(key, need(key, val)?)?,
        "cache_entries" => {
            cfg.cache_entries = parse_num(key, need(key, val)?)?;
            if cfg.cache_entries == 0 {
                bail!("option cache_entries= must be at least 1");
            }
        }
        "watch" => cfg.watch = parse_bool(key, need(key, val)?)?,
        "uring" => cfg.uring = parse_bool(key, need(key, val)?)?,
        "uring_idle" => cfg.uring_idle = parse_bool(key, need(key, val)?)?,
        "drop_negative_lower" => {
            flag(val)?;
            cfg.drop_negative_lower = true;
        }
        "allow_other" => {
            flag(val)?;
            cfg.allow_other = true;
        }
        "allow_root" => {
            flag(val)?;
            cfg.allow_root = true;
        }
        // plyfs always asks the kernel to check permissions; accepted for compatibility.
        "default_permissions" => flag(val)?,
        "ro" => {
            flag(val)?;
            cfg.read_only = true;
        }
        "rw" => {
            flag(val)?;
            cfg.read_only = false;
        }
        "fsname" => cfg.fsname = Some(need(key, val)?.to_string()),
        "subtype" => cfg.subtype = Some(need(key, val)?.to_string()),
        "dev" | "nodev" | "suid" | "nosuid" | "exec" | "noexec" | "atime" | "noatime" => {
            flag(val)?;
            let on = !key.starts_with("no");
            cfg.kernel_flags.push(match key.trim_start_matches("no") {
                "dev" => KernelFlag::Dev(on),
                "suid" => KernelFlag::Suid(on),
                "exec" => KernelFlag::Exec(on),
                _ => KernelFlag::Atime(on),
            });
        }
        "debug" => {
            flag(val)?;
            cfg.debug = true;
            cfg.foreground = true;
        }
        // Options that mount(8) and mount.fuse hand to every helper and that have no meaning
        // here: FUSE mounts are relatime and async already.
        "strictatime" | "relatime" => {
            flag(val)?;
            cfg.strictatime = key == "strictatime";
        }
        "nodiratime" | "diratime" | "async" | "defaults" | "auto" | "noauto" | "nofail"
        | "_netdev" | "user" | "users" | "nouser" => flag(val)?,
        _ if key.starts_with("x-") => {}
        _ => bail!("unknown option '{opt}'"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        match parse_args(&args)? {
            Action::Mount(c) => Ok(*c),
            a => bail!("not a mount: {a:?}"),
        }
    }

    #[test]
    fn fuse_overlayfs_form() {
        let c = parse(&["-o", "lowerdir=/a:/b,upperdir=/u,workdir=/w", "/mnt"]).unwrap();
        assert_eq!(c.lowers, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(c.upper, Some(PathBuf::from("/u")));
        assert_eq!(c.work, Some(PathBuf::from("/w")));
        assert_eq!(c.mountpoint, PathBuf::from("/mnt"));
        assert!(!c.foreground);
        assert!(!c.is_read_only());
    }

    #[test]
    fn escaped_colon_and_comma() {
        let c = parse(&["-o", r"lowerdir=/a\:1:/b\,2:/c\\d", "/m"]).unwrap();
        assert_eq!(
            c.lowers,
            vec![
                PathBuf::from("/a:1"),
                PathBuf::from("/b,2"),
                PathBuf::from(r"/c\d")
            ]
        );
    }

    #[test]
    fn empty_options_ignored() {
        let c = parse(&["-o", ",,lowerdir=/a,,fsync=0,", "/m"]).unwrap();
        assert_eq!(c.lowers, vec![PathBuf::from("/a")]);
        assert!(!c.fsync);
        assert!(c.is_read_only(), "lowerdir-only mount is read-only");
    }

    #[test]
    fn mount_fuse_form() {
        let c = parse(&["overlay", "/m", "-o", "rw,lowerdir=/a,dev,suid"]).unwrap();
        assert_eq!(c.source.as_deref(), Some("overlay"));
        assert_eq!(c.fs_name(), "overlay");
        assert_eq!(c.mountpoint, PathBuf::from("/m"));
        assert_eq!(
            c.kernel_flags,
            vec![KernelFlag::Dev(true), KernelFlag::Suid(true)]
        );
    }

    #[test]
    fn several_o_and_flags() {
        let c = parse(&["-f", "-olowerdir=/a", "-o", "timeout=2.5,threads=8", "/m"]).unwrap();
        assert!(c.foreground);
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert_eq!(c.threads, 8);
        let d = parse(&["-d", "-o", "lowerdir=/a", "/m"]).unwrap();
        assert!(d.debug && d.foreground, "-d implies foreground");
    }

    #[test]
    fn id_mappings() {
        let c = parse(&[
            "-o",
            "lowerdir=/a,uidmapping=:0:1001:1:1:100000:65536,gidmapping=0:1001:1",
            "/m",
        ])
        .unwrap();
        assert_eq!(
            c.uid_map,
            vec![
                IdRange {
                    inner: 0,
                    outer: 1001,
                    count: 1
                },
                IdRange {
                    inner: 1,
                    outer: 100000,
                    count: 65536
                }
            ]
        );
        assert_eq!(c.gid_map.len(), 1);
        assert!(parse(&["-o", "lowerdir=/a,uidmapping=0:1", "/m"]).is_err());
    }

    #[test]
    fn errors_name_the_option() {
        let e = parse(&["-o", "lowerdir=/a,bogus=1", "/m"]).unwrap_err();
        assert!(e.to_string().contains("bogus=1"), "{e}");
        let e = parse(&["-o", "lowerdir=/a,threads=x", "/m"]).unwrap_err();
        assert!(e.to_string().contains("threads"), "{e}");
        let e = parse(&["-o", "lowerdir=/a,redirect_dir=maybe", "/m"]).unwrap_err();
        assert!(e.to_string().contains("redirect_dir"), "{e}");
        let e = parse(&["-o", "lowerdir=/a,volatile=1", "/m"]).unwrap_err();
        assert!(e.to_string().contains("volatile"), "{e}");
        let e = parse(&["-x", "/m"]).unwrap_err();
        assert!(e.to_string().contains("-x"), "{e}");
        assert!(parse(&["-o", "lowerdir=/a"]).is_err(), "no mount point");
        assert!(parse(&["a", "b", "c"]).is_err(), "too many arguments");
        let many = format!("lowerdir={}", vec!["/l"; MAX_LOWERS + 1].join(":"));
        let err = parse(&["-o", &many, "/m"]).unwrap_err().to_string();
        assert!(err.contains("more than the 500"), "{err}");
        let most = format!("lowerdir={}", vec!["/l"; MAX_LOWERS].join(":"));
        assert!(parse(&["-o", &most, "/m"]).is_ok());
    }

    #[test]
    fn version_and_help() {
        let v = parse_args(&[OsString::from("--version")]).unwrap();
        assert!(matches!(v, Action::Version));
        let h = parse_args(&[OsString::from("--help")]).unwrap();
        assert!(matches!(h, Action::Help));
    }

    #[test]
    fn squash_and_options_with_values() {
        let c = parse(&[
            "-o",
            "lowerdir=/a,squash_to_root,xino=off,index=on,nfs_export=off,userxattr",
            "/m",
        ])
        .unwrap();
        assert_eq!((c.squash_uid, c.squash_gid), (Some(0), Some(0)));
        assert_eq!(c.xino, Some(false));
        assert_eq!(c.index, Some(true));
        assert_eq!(c.nfs_export, Some(false));
        assert!(c.userxattr);
    }

    #[test]
    fn validate_checks_layers() {
        let base = std::env::temp_dir().join(format!("plyfs-cfg-{}", std::process::id()));
        let (l, u, w, m) = (
            base.join("l"),
            base.join("u"),
            base.join("w"),
            base.join("m"),
        );
        for d in [&l, &u, &w, &m] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(base.join("file"), b"").unwrap();
        let opts = |s: String| parse(&["-o", &s, m.to_str().unwrap()]).unwrap();
        let p = |x: &Path| x.display().to_string();
        assert!(opts(format!(
            "lowerdir={},upperdir={},workdir={}",
            p(&l),
            p(&u),
            p(&w)
        ))
        .validate()
        .is_ok());
        let e = opts(format!("lowerdir={}", p(&base.join("nope"))))
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
        let e = opts(format!("lowerdir={}", p(&base.join("file"))))
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
        let inner = u.join("work");
        std::fs::create_dir_all(&inner).unwrap();
        let e = opts(format!(
            "lowerdir={},upperdir={},workdir={}",
            p(&l),
            p(&u),
            p(&inner)
        ))
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("inside upperdir"), "{e}");
        let e = opts(format!("lowerdir={},upperdir={}", p(&l), p(&u)))
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("workdir"), "{e}");
        let e = opts(format!("lowerdir={},workdir={}", p(&l), p(&w)))
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("upperdir"), "{e}");
        let e = opts(format!("lowerdir={}", p(&base)))
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("inside layer"), "{e}");
        let c = parse(&["-o", &format!("lowerdir={}", p(&l)), "/nonexistent-mnt"]).unwrap();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("mount point"));
        std::fs::remove_dir_all(&base).unwrap();
    }
}
