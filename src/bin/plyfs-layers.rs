//! plyfs-layers: owns the test-layer manifest format and its builder.
//!
//! Git cannot store whiteout devices, xattrs, owners or sparse files, so the
//! overlay test layers live in `layers/` as text manifests (format described
//! in `layers/README.md`) and this self-contained binary turns a layer *set*
//! into real directories, writing the abstract markers (whiteout, opaque) in
//! a chosen on-disk FORM, and prints the overlay mount option string.  It
//! also owns `dump`, the canonical listing of a real tree used by the mount
//! tests to compare a plyfs mount with a kernel overlay mount.
//!
//! ```text
//! plyfs-layers build [--whiteout=chardev|xattr|aufs] [--opaque=xattr|fuse-overlayfs|aufs]
//!                    [--xattr-ns=trusted|user] SETDIR OUTDIR
//! plyfs-layers dump [--no-xattrs] [--no-owner] DIR
//! ```
//!
//! Depends only on std, libc and the `xattr` crate (whose calls never follow
//! symlinks).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "usage: plyfs-layers build [--whiteout=chardev|xattr|aufs] \
[--opaque=xattr|fuse-overlayfs|aufs] [--xattr-ns=trusted|user] SETDIR OUTDIR\n       \
plyfs-layers dump [--no-xattrs] [--no-owner] DIR";

// ---------------------------------------------------------------------------
// Manifest model
// ---------------------------------------------------------------------------

/// The type column of a manifest line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink,
    Fifo,
    Socket,
    Chr,
    Blk,
    Hardlink,
    Whiteout,
}

impl Kind {
    fn parse(s: &[u8]) -> Option<Kind> {
        Some(match s {
            b"dir" => Kind::Dir,
            b"file" => Kind::File,
            b"symlink" => Kind::Symlink,
            b"fifo" => Kind::Fifo,
            b"socket" => Kind::Socket,
            b"chr" => Kind::Chr,
            b"blk" => Kind::Blk,
            b"hardlink" => Kind::Hardlink,
            b"whiteout" => Kind::Whiteout,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Dir => "dir",
            Kind::File => "file",
            Kind::Symlink => "symlink",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
            Kind::Chr => "chr",
            Kind::Blk => "blk",
            Kind::Hardlink => "hardlink",
            Kind::Whiteout => "whiteout",
        }
    }
}

/// Content of a regular file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Content {
    Bytes(Vec<u8>),
    /// N bytes of the deterministic pattern (see [`pattern_byte`]).
    Pattern(u64),
    /// N bytes, a hole except the last byte.
    Sparse(u64),
}

/// One entry (line, or implicit parent) of a layer manifest.
#[derive(Debug, Clone)]
struct Entry {
    /// Relative path, validated: no leading '/', no '.', '..' or empty parts.
    path: Vec<u8>,
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    content: Content,
    /// Symlink target (raw) or hardlink target (a path in the same layer).
    target: Option<Vec<u8>>,
    rdev: Option<(u32, u32)>,
    mtime: Option<i64>,
    /// Real xattrs (`xattr.NAME=VALUE`), full names.
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Overlay private xattrs (`ovl.NAME=VALUE`), NAME without prefix.
    ovl: Vec<(Vec<u8>, Vec<u8>)>,
    opaque: bool,
    /// 1-based line that declared it (for implicit parents: the child's line).
    line: usize,
    implicit: bool,
}

impl Entry {
    fn new(path: Vec<u8>, kind: Kind, line: usize) -> Entry {
        Entry {
            path,
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            content: Content::Bytes(Vec::new()),
            target: None,
            rdev: None,
            mtime: None,
            xattrs: Vec::new(),
            ovl: Vec::new(),
            opaque: false,
            line,
            implicit: false,
        }
    }
}

/// A parsed manifest: entries in creation order (parents before children).
#[derive(Debug, Default)]
struct Manifest {
    entries: Vec<Entry>,
    index: HashMap<Vec<u8>, usize>,
}

/// A manifest problem at a 1-based line.
#[derive(Debug, PartialEq, Eq)]
struct ParseError {
    line: usize,
    msg: String,
}

impl ParseError {
    fn new(line: usize, msg: impl Into<String>) -> ParseError {
        ParseError {
            line,
            msg: msg.into(),
        }
    }
}

// ---------------------------------------------------------------------------
// Tokenizer
// ---------------------------------------------------------------------------

/// A whitespace-separated field after unquoting and unescaping.
#[derive(Debug, PartialEq, Eq)]
struct Token {
    bytes: Vec<u8>,
    /// Offset in `bytes` of the first literal (unquoted, unescaped) '='.
    eq: Option<usize>,
}

/// Splits one line into fields.  Double quotes group (and may appear in the
/// middle of a field: `content="a b"`); backslash escapes `\\ \" \n \t \s
/// \xHH` work both inside and outside quotes.  A `#` at the start of a field
/// (outside quotes) starts a comment running to the end of the line.
fn tokenize(line: &[u8]) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < line.len() {
        let c = line[i];
        if c == b' ' || c == b'\t' || c == b'\r' {
            i += 1;
            continue;
        }
        if c == b'#' {
            break;
        }
        let mut tok = Token {
            bytes: Vec::new(),
            eq: None,
        };
        let mut quoted = false;
        while i < line.len() {
            let c = line[i];
            if !quoted && (c == b' ' || c == b'\t' || c == b'\r') {
                break;
            }
            i += 1;
            match c {
                b'"' => quoted = !quoted,
                b'\\' => {
                    let Some(&e) = line.get(i) else {
                        return Err("backslash at end of line".into());
                    };
                    i += 1;
                    let b = match e {
                        b'\\' => b'\\',
                        b'"' => b'"',
                        b'n' => b'\n',
                        b't' => b'\t',
                        b's' => b' ',
                        b'x' => {
                            let hex = line.get(i..i + 2).ok_or("\\x needs two hex digits")?;
                            i += 2;
                            let s = std::str::from_utf8(hex).map_err(|_| "bad \\x escape")?;
                            u8::from_str_radix(s, 16)
                                .map_err(|_| format!("bad \\x escape '\\x{s}'"))?
                        }
                        other => {
                            return Err(format!("unknown escape '\\{}'", other.escape_ascii()))
                        }
                    };
                    tok.bytes.push(b);
                }
                b'=' if !quoted && tok.eq.is_none() => {
                    tok.eq = Some(tok.bytes.len());
                    tok.bytes.push(b'=');
                }
                _ => tok.bytes.push(c),
            }
        }
        if quoted {
            return Err("unterminated double quote".into());
        }
        out.push(tok);
    }
    Ok(out)
}

/// Escapes bytes so that [`tokenize`] reads them back as one field; printable
/// ASCII stays as is, everything else becomes `\s \n \t \xHH`.
fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\\' => s.push_str("\\\\"),
            b'"' => s.push_str("\\\""),
            b' ' => s.push_str("\\s"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            b'#' | b'=' => s.push_str(&format!("\\x{b:02x}")),
            0x21..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    if s.is_empty() {
        s.push_str("\"\"");
    }
    s
}

// ---------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------

fn parse_path(p: &[u8]) -> Result<Vec<u8>, String> {
    if p.is_empty() {
        return Err("empty path".into());
    }
    if p[0] == b'/' {
        return Err(format!("path '{}' must be relative", escape(p)));
    }
    if p.contains(&0) {
        return Err("path contains a NUL byte".into());
    }
    for part in p.split(|&b| b == b'/') {
        match part {
            b"" => return Err(format!("path '{}' has an empty component", escape(p))),
            b"." | b".." => {
                return Err(format!(
                    "path '{}' has a '{}' component",
                    escape(p),
                    escape(part)
                ))
            }
            _ if part.len() > 255 => {
                return Err(format!(
                    "path component of {} bytes is longer than 255",
                    part.len()
                ))
            }
            _ => {}
        }
    }
    Ok(p.to_vec())
}

fn parse_mode(s: &[u8]) -> Result<u32, String> {
    let txt = std::str::from_utf8(s).unwrap_or("");
    if txt.is_empty() || txt.len() > 5 || !txt.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(format!("bad mode '{}': want octal like 0644", escape(s)));
    }
    let m = u32::from_str_radix(txt, 8).map_err(|e| e.to_string())?;
    if m > 0o7777 {
        return Err(format!("mode '{txt}' has bits beyond 07777"));
    }
    Ok(m)
}

fn parse_pair(s: &[u8], what: &str) -> Result<(u32, u32), String> {
    let bad = || format!("bad {what} '{}': want N:N", escape(s));
    let txt = std::str::from_utf8(s).map_err(|_| bad())?;
    let (a, b) = txt.split_once(':').ok_or_else(bad)?;
    let num = |x: &str| {
        if x.is_empty() || !x.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        x.parse::<u32>().map_err(|_| bad())
    };
    Ok((num(a)?, num(b)?))
}

fn parse_u64(v: &[u8], key: &str) -> Result<u64, String> {
    std::str::from_utf8(v)
        .ok()
        .filter(|t| !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit()))
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| format!("bad {key}= value '{}': want a number", escape(v)))
}

/// Parses a whole manifest.  Errors carry the 1-based line number.
fn parse_manifest(text: &[u8]) -> Result<Manifest, ParseError> {
    let mut m = Manifest::default();
    for (idx, line) in text.split(|&b| b == b'\n').enumerate() {
        let lineno = idx + 1;
        let toks = tokenize(line).map_err(|e| ParseError::new(lineno, e))?;
        if toks.is_empty() {
            continue;
        }
        let entry = parse_entry(&toks, lineno).map_err(|e| ParseError::new(lineno, e))?;
        add_entry(&mut m, entry).map_err(|e| ParseError::new(lineno, e))?;
    }
    Ok(m)
}

fn parse_entry(toks: &[Token], line: usize) -> Result<Entry, String> {
    if toks.len() < 4 {
        return Err(format!(
            "want 'PATH TYPE MODE OWNER [KEY=VALUE ...]', got {} field(s)",
            toks.len()
        ));
    }
    let path = parse_path(&toks[0].bytes)?;
    let kind = Kind::parse(&toks[1].bytes).ok_or_else(|| {
        format!(
            "unknown type '{}' (want dir|file|symlink|fifo|socket|chr|blk|hardlink|whiteout)",
            escape(&toks[1].bytes)
        )
    })?;
    let mut e = Entry::new(path, kind, line);
    e.mode = parse_mode(&toks[2].bytes)?;
    (e.uid, e.gid) = parse_pair(&toks[3].bytes, "owner")?;

    let mut seen: Vec<Vec<u8>> = Vec::new();
    let mut have_content = false;
    for t in &toks[4..] {
        let Some(eq) = t.eq else {
            return Err(format!("field '{}' is not KEY=VALUE", escape(&t.bytes)));
        };
        let key = &t.bytes[..eq];
        let val = t.bytes[eq + 1..].to_vec();
        if seen.iter().any(|k| k == key) {
            return Err(format!("key '{}' given twice", escape(key)));
        }
        seen.push(key.to_vec());
        let keyname = String::from_utf8_lossy(key).into_owned();
        let allowed: &[Kind] = match key {
            b"content" | b"size" | b"sparse" => &[Kind::File],
            b"target" => &[Kind::Symlink, Kind::Hardlink],
            b"rdev" => &[Kind::Chr, Kind::Blk],
            b"opaque" => &[Kind::Dir],
            b"mtime" => &[
                Kind::Dir,
                Kind::File,
                Kind::Symlink,
                Kind::Fifo,
                Kind::Socket,
                Kind::Chr,
                Kind::Blk,
            ],
            _ if key.starts_with(b"xattr.") || key.starts_with(b"ovl.") => &[
                Kind::Dir,
                Kind::File,
                Kind::Symlink,
                Kind::Fifo,
                Kind::Socket,
                Kind::Chr,
                Kind::Blk,
            ],
            _ => return Err(format!("unknown key '{}'", escape(key))),
        };
        if !allowed.contains(&kind) {
            return Err(format!(
                "key '{keyname}' is not allowed on a {}",
                kind.name()
            ));
        }
        match key {
            b"content" | b"size" | b"sparse" => {
                if have_content {
                    return Err("only one of content=, size=, sparse= may be given".into());
                }
                have_content = true;
                e.content = match key {
                    b"content" => Content::Bytes(val),
                    b"size" => Content::Pattern(parse_u64(&val, "size")?),
                    _ => {
                        let n = parse_u64(&val, "sparse")?;
                        if n == 0 {
                            return Err("sparse= must be at least 1".into());
                        }
                        Content::Sparse(n)
                    }
                };
            }
            b"target" => {
                if val.is_empty() {
                    return Err("target= must not be empty".into());
                }
                if val.contains(&0) {
                    return Err("target= contains a NUL byte".into());
                }
                e.target = Some(val);
            }
            b"rdev" => e.rdev = Some(parse_pair(&val, "rdev")?),
            b"opaque" => {
                if val != b"y" {
                    return Err(format!("opaque= must be 'y', got '{}'", escape(&val)));
                }
                e.opaque = true;
            }
            b"mtime" => {
                let txt = std::str::from_utf8(&val).unwrap_or("");
                e.mtime =
                    Some(txt.parse::<i64>().map_err(|_| {
                        format!("bad mtime= value '{}': want seconds", escape(&val))
                    })?);
            }
            _ => {
                let (prefix, list) = if let Some(n) = key.strip_prefix(b"xattr.") {
                    (n, &mut e.xattrs)
                } else {
                    (&key[4..], &mut e.ovl)
                };
                if prefix.is_empty() || prefix.contains(&0) {
                    return Err(format!("bad xattr name in key '{}'", escape(key)));
                }
                if !matches!(kind, Kind::File | Kind::Dir) && key.starts_with(b"xattr.user.") {
                    return Err(format!(
                        "Linux allows user.* xattrs only on files and dirs, not on a {}",
                        kind.name()
                    ));
                }
                if key.starts_with(b"xattr.") && !prefix.contains(&b'.') {
                    return Err(format!(
                        "xattr name '{}' has no namespace (want e.g. user.NAME)",
                        escape(prefix)
                    ));
                }
                list.push((prefix.to_vec(), val));
            }
        }
    }
    match kind {
        Kind::Symlink | Kind::Hardlink if e.target.is_none() => {
            return Err(format!("a {} needs target=", kind.name()))
        }
        Kind::Chr | Kind::Blk if e.rdev.is_none() => {
            return Err(format!("a {} needs rdev=MAJ:MIN", kind.name()))
        }
        Kind::Hardlink => {
            parse_path(e.target.as_deref().unwrap_or_default())
                .map_err(|err| format!("hardlink target: {err}"))?;
        }
        _ => {}
    }
    Ok(e)
}

fn parent_of(p: &[u8]) -> Option<&[u8]> {
    p.iter().rposition(|&b| b == b'/').map(|i| &p[..i])
}

fn base_of(p: &[u8]) -> &[u8] {
    match p.iter().rposition(|&b| b == b'/') {
        Some(i) => &p[i + 1..],
        None => p,
    }
}

fn add_entry(m: &mut Manifest, e: Entry) -> Result<(), String> {
    // Parents first: must be directories, created implicitly when missing.
    let mut missing = Vec::new();
    let mut cur = parent_of(&e.path);
    while let Some(p) = cur {
        match m.index.get(p) {
            Some(&i) => {
                let pe = &m.entries[i];
                if pe.kind != Kind::Dir {
                    return Err(format!(
                        "parent '{}' is a {} (line {}), not a dir",
                        escape(p),
                        pe.kind.name(),
                        pe.line
                    ));
                }
                break;
            }
            None => missing.push(p.to_vec()),
        }
        cur = parent_of(p);
    }
    for p in missing.into_iter().rev() {
        let mut d = Entry::new(p.clone(), Kind::Dir, e.line);
        d.implicit = true;
        m.index.insert(p, m.entries.len());
        m.entries.push(d);
    }
    if e.kind == Kind::Hardlink {
        let t = e.target.as_deref().unwrap_or_default();
        match m.index.get(t).map(|&i| &m.entries[i]) {
            None => {
                return Err(format!(
                    "hardlink target '{}' is not an earlier entry of this layer",
                    escape(t)
                ))
            }
            Some(te) if matches!(te.kind, Kind::Dir | Kind::Whiteout) => {
                return Err(format!(
                    "hardlink target '{}' is a {} (line {})",
                    escape(t),
                    te.kind.name(),
                    te.line
                ))
            }
            Some(_) => {}
        }
    }
    if let Some(&i) = m.index.get(&e.path) {
        let old = &m.entries[i];
        if old.implicit && e.kind == Kind::Dir {
            // An explicit line refines an implicitly created parent; the
            // entry keeps its place (before its children).
            let mut e = e;
            e.line = old.line.min(e.line);
            m.entries[i] = e;
            return Ok(());
        }
        return Err(format!(
            "duplicate path '{}' (first at line {}{})",
            escape(&e.path),
            old.line,
            if old.implicit {
                ", implicitly as a parent dir"
            } else {
                ""
            }
        ));
    }
    m.index.insert(e.path.clone(), m.entries.len());
    m.entries.push(e);
    Ok(())
}

// ---------------------------------------------------------------------------
// Forms and building
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WhiteoutForm {
    Chardev,
    Xattr,
    Aufs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpaqueForm {
    Xattr,
    FuseOverlayfs,
    Aufs,
}

#[derive(Debug, Clone, Copy)]
struct Forms {
    whiteout: WhiteoutForm,
    opaque: OpaqueForm,
    /// "trusted" or "user": prefix of overlay private xattrs.
    ns: &'static str,
}

impl Forms {
    fn ovl_name(&self, name: &[u8]) -> Vec<u8> {
        let mut v = format!("{}.overlay.", self.ns).into_bytes();
        v.extend_from_slice(name);
        v
    }
}

const AUFS_WH: &[u8] = b".wh.";
const AUFS_OPQ: &[u8] = b".wh..wh..opq";

/// An error while building, optionally tied to a manifest line.
#[derive(Debug)]
struct BuildError {
    file: Option<PathBuf>,
    line: Option<usize>,
    msg: String,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(l)) => write!(f, "{}:{l}: {}", file.display(), self.msg),
            (Some(file), None) => write!(f, "{}: {}", file.display(), self.msg),
            _ => write!(f, "{}", self.msg),
        }
    }
}

fn berr(msg: impl Into<String>) -> BuildError {
    BuildError {
        file: None,
        line: None,
        msg: msg.into(),
    }
}

fn mknod(p: &Path, fmt_bits: libc::mode_t, perm: u32, maj: u32, min: u32) -> io::Result<()> {
    use nix::sys::stat::{Mode, SFlag};
    nix::sys::stat::mknod(
        p,
        SFlag::from_bits_truncate(fmt_bits),
        Mode::from_bits_truncate(perm as libc::mode_t),
        libc::makedev(maj, min),
    )
    .map_err(io::Error::from)
}

/// Sets atime and mtime of `p` without following a symlink (lutimes).
fn set_mtime(p: &Path, secs: i64) -> io::Result<()> {
    let ts = nix::sys::time::TimeSpec::new(secs, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &ts,
        &ts,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

/// Deterministic content for `size=N` files: byte i is i mod 251 (a prime,
/// so the pattern never lines up with block boundaries).
fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

fn write_content(p: &Path, c: &Content) -> io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(p)?;
    match c {
        Content::Bytes(b) => f.write_all(b)?,
        Content::Pattern(n) => {
            let mut buf = Vec::with_capacity(64 * 1024);
            let mut i = 0u64;
            while i < *n {
                buf.clear();
                let end = (*n).min(i + 64 * 1024);
                buf.extend((i..end).map(pattern_byte));
                f.write_all(&buf)?;
                i = end;
            }
        }
        Content::Sparse(n) => {
            f.seek(SeekFrom::Start(n - 1))?;
            f.write_all(b"\n")?;
        }
    }
    Ok(())
}

fn join(root: &Path, rel: &[u8]) -> PathBuf {
    root.join(OsStr::from_bytes(rel))
}

fn touch_marker(p: &Path, perm: u32) -> io::Result<()> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(perm)
        .open(p)?;
    fs::set_permissions(p, fs::Permissions::from_mode(perm))?;
    std::os::unix::fs::lchown(p, Some(0), Some(0))
}

/// Builds one layer into the existing, empty directory `root`.
fn build_layer(m: &Manifest, root: &Path, forms: Forms) -> Result<(), (usize, String)> {
    // Directories that hold xattr whiteouts (get NS.overlay.opaque="x").
    let mut xwh_dirs: Vec<Vec<u8>> = Vec::new();
    let is_opaque_dir = |p: &[u8]| {
        m.index
            .get(p)
            .map(|&i| m.entries[i].opaque)
            .unwrap_or(false)
    };
    for e in &m.entries {
        let p = join(root, &e.path);
        let ctx =
            |what: &str, err: io::Error| (e.line, format!("{what} '{}': {err}", escape(&e.path)));
        match e.kind {
            Kind::Dir => fs::create_dir(&p).map_err(|x| ctx("mkdir", x))?,
            Kind::File => write_content(&p, &e.content).map_err(|x| ctx("write", x))?,
            Kind::Symlink => {
                let t = OsStr::from_bytes(e.target.as_deref().unwrap_or_default());
                std::os::unix::fs::symlink(t, &p).map_err(|x| ctx("symlink", x))?
            }
            Kind::Fifo => mknod(&p, libc::S_IFIFO, 0o600, 0, 0).map_err(|x| ctx("mknod", x))?,
            Kind::Socket => mknod(&p, libc::S_IFSOCK, 0o600, 0, 0).map_err(|x| ctx("mknod", x))?,
            Kind::Chr | Kind::Blk => {
                let (maj, min) = e.rdev.unwrap_or((0, 0));
                let t = if e.kind == Kind::Chr {
                    libc::S_IFCHR
                } else {
                    libc::S_IFBLK
                };
                mknod(&p, t, 0o600, maj, min).map_err(|x| ctx("mknod", x))?
            }
            Kind::Hardlink => {
                let t = join(root, e.target.as_deref().unwrap_or_default());
                fs::hard_link(&t, &p).map_err(|x| ctx("link", x))?;
                continue;
            }
            Kind::Whiteout => {
                let parent = parent_of(&e.path).unwrap_or(b"");
                match forms.whiteout {
                    WhiteoutForm::Chardev => {
                        mknod(&p, libc::S_IFCHR, 0, 0, 0).map_err(|x| ctx("mknod whiteout", x))?
                    }
                    WhiteoutForm::Xattr => {
                        if is_opaque_dir(parent) {
                            // Meaningless under an opaque dir: omitted.
                            continue;
                        }
                        touch_marker(&p, 0).map_err(|x| ctx("create whiteout", x))?;
                        xattr::set(&p, OsStr::from_bytes(&forms.ovl_name(b"whiteout")), b"")
                            .map_err(|x| ctx("set whiteout xattr on", x))?;
                        if !xwh_dirs.iter().any(|d| d == parent) {
                            xwh_dirs.push(parent.to_vec());
                        }
                    }
                    WhiteoutForm::Aufs => {
                        let mut name = AUFS_WH.to_vec();
                        name.extend_from_slice(base_of(&e.path));
                        if name.len() > 255 {
                            return Err((
                                e.line,
                                format!(
                                    "aufs whiteout name for '{}' would be {} bytes (> 255)",
                                    escape(&e.path),
                                    name.len()
                                ),
                            ));
                        }
                        let q = join(root, parent).join(OsStr::from_bytes(&name));
                        touch_marker(&q, 0o444).map_err(|x| ctx("create aufs whiteout for", x))?;
                    }
                }
                continue;
            }
        }
        std::os::unix::fs::lchown(&p, Some(e.uid), Some(e.gid)).map_err(|x| ctx("chown", x))?;
        // Directory modes are applied last (children first) so that a 0555
        // dir can still be filled when not running as root.
        if !matches!(e.kind, Kind::Symlink | Kind::Dir) {
            fs::set_permissions(&p, fs::Permissions::from_mode(e.mode))
                .map_err(|x| ctx("chmod", x))?;
        }
        for (n, v) in &e.xattrs {
            xattr::set(&p, OsStr::from_bytes(n), v)
                .map_err(|x| ctx(&format!("set xattr {} on", String::from_utf8_lossy(n)), x))?;
        }
        for (n, v) in &e.ovl {
            let full = forms.ovl_name(n);
            xattr::set(&p, OsStr::from_bytes(&full), v).map_err(|x| {
                ctx(
                    &format!("set xattr {} on", String::from_utf8_lossy(&full)),
                    x,
                )
            })?;
        }
        if e.opaque {
            match forms.opaque {
                OpaqueForm::Xattr => {
                    xattr::set(&p, OsStr::from_bytes(&forms.ovl_name(b"opaque")), b"y")
                        .map_err(|x| ctx("set opaque xattr on", x))?
                }
                OpaqueForm::FuseOverlayfs => xattr::set(&p, "user.fuseoverlayfs.opaque", b"y")
                    .map_err(|x| ctx("set opaque xattr on", x))?,
                OpaqueForm::Aufs => touch_marker(&p.join(OsStr::from_bytes(AUFS_OPQ)), 0o444)
                    .map_err(|x| ctx("create aufs opaque marker in", x))?,
            }
        }
    }
    for d in &xwh_dirs {
        let line = m.index.get(d).map(|&i| m.entries[i].line).unwrap_or(0);
        let p = join(root, d);
        xattr::set(&p, OsStr::from_bytes(&forms.ovl_name(b"opaque")), b"x")
            .map_err(|x| (line, format!("set opaque=x xattr on '{}': {x}", escape(d))))?;
    }
    for e in m.entries.iter().rev() {
        let p = join(root, &e.path);
        if e.kind == Kind::Dir {
            fs::set_permissions(&p, fs::Permissions::from_mode(e.mode))
                .map_err(|x| (e.line, format!("chmod '{}': {x}", escape(&e.path))))?;
        }
        if let Some(t) = e.mtime {
            set_mtime(&p, t)
                .map_err(|x| (e.line, format!("set mtime of '{}': {x}", escape(&e.path))))?;
        }
    }
    Ok(())
}

/// Checks form-specific restrictions before anything is written.
fn check_forms(m: &Manifest, forms: Forms) -> Result<(), ParseError> {
    for e in &m.entries {
        let base = base_of(&e.path);
        if (forms.whiteout == WhiteoutForm::Aufs || forms.opaque == OpaqueForm::Aufs)
            && base.starts_with(AUFS_WH)
        {
            return Err(ParseError::new(
                e.line,
                format!(
                    "name '{}' starts with .wh. and cannot be written in the aufs form",
                    escape(base)
                ),
            ));
        }
        if forms.ns == "user" && e.kind == Kind::Symlink && !e.ovl.is_empty() {
            return Err(ParseError::new(
                e.line,
                "ovl.* keys on a symlink cannot be written with --xattr-ns=user",
            ));
        }
    }
    Ok(())
}

struct LayerFile {
    /// Path as shown in messages.
    path: PathBuf,
    /// Output name (file name without `.layer`).
    name: String,
    manifest: Manifest,
}

fn is_lower_name(stem: &str) -> bool {
    match stem.split_once('-') {
        Some((nn, rest)) => {
            !nn.is_empty()
                && nn.bytes().all(|b| b.is_ascii_digit())
                && !rest.is_empty()
                // The name ends up in the lowerdir= mount option.
                && !rest.contains([':', ',', '\\', ' ', '\t', '\n'])
        }
        None => false,
    }
}

/// Reads and parses a layer set: (lowers bottom to top, optional upper).
fn read_set(setdir: &Path) -> Result<(Vec<LayerFile>, Option<LayerFile>), BuildError> {
    let rd = fs::read_dir(setdir)
        .map_err(|e| berr(format!("cannot read layer set '{}': {e}", setdir.display())))?;
    let mut names = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| berr(format!("read '{}': {e}", setdir.display())))?;
        names.push(ent.file_name());
    }
    names.sort();
    let mut lowers = Vec::new();
    let mut upper = None;
    for n in names {
        let Some(s) = n.to_str() else { continue };
        let Some(stem) = s.strip_suffix(".layer") else {
            continue;
        };
        let path = setdir.join(&n);
        let text = fs::read(&path).map_err(|e| BuildError {
            file: Some(path.clone()),
            line: None,
            msg: e.to_string(),
        })?;
        let manifest = parse_manifest(&text).map_err(|e| BuildError {
            file: Some(path.clone()),
            line: Some(e.line),
            msg: e.msg,
        })?;
        let lf = LayerFile {
            path,
            name: stem.to_string(),
            manifest,
        };
        if stem == "upper" {
            upper = Some(lf);
        } else if is_lower_name(stem) {
            lowers.push(lf);
        } else {
            return Err(BuildError {
                file: Some(lf.path),
                line: None,
                msg: "layer files must be named NN-NAME.layer or upper.layer".into(),
            });
        }
    }
    if lowers.is_empty() {
        return Err(berr(format!(
            "layer set '{}' has no NN-NAME.layer file",
            setdir.display()
        )));
    }
    Ok((lowers, upper))
}

fn cmd_build(args: &[OsString]) -> Result<(), (u8, String)> {
    let mut forms = Forms {
        whiteout: WhiteoutForm::Chardev,
        opaque: OpaqueForm::Xattr,
        ns: "trusted",
    };
    let mut pos = Vec::new();
    for a in args {
        let s = a.to_string_lossy();
        if let Some(v) = s.strip_prefix("--whiteout=") {
            forms.whiteout = match v {
                "chardev" => WhiteoutForm::Chardev,
                "xattr" => WhiteoutForm::Xattr,
                "aufs" => WhiteoutForm::Aufs,
                _ => return Err((2, format!("unknown whiteout form '{v}' (see --help)"))),
            };
        } else if let Some(v) = s.strip_prefix("--opaque=") {
            forms.opaque = match v {
                "xattr" => OpaqueForm::Xattr,
                "fuse-overlayfs" => OpaqueForm::FuseOverlayfs,
                "aufs" => OpaqueForm::Aufs,
                _ => return Err((2, format!("unknown opaque form '{v}' (see --help)"))),
            };
        } else if let Some(v) = s.strip_prefix("--xattr-ns=") {
            forms.ns = match v {
                "trusted" => "trusted",
                "user" => "user",
                _ => return Err((2, format!("unknown xattr namespace '{v}' (see --help)"))),
            };
        } else if s.starts_with("--") {
            return Err((2, format!("unknown option '{s}' (see --help)")));
        } else {
            pos.push(PathBuf::from(a));
        }
    }
    let [setdir, outdir] = pos.as_slice() else {
        return Err((2, USAGE.to_string()));
    };

    let (lowers, upper) = read_set(setdir).map_err(|e| (2, e.to_string()))?;
    for lf in lowers.iter().chain(upper.iter()) {
        check_forms(&lf.manifest, forms)
            .map_err(|e| (2, format!("{}:{}: {}", lf.path.display(), e.line, e.msg)))?;
    }

    // OUTDIR must not exist or be empty.
    match fs::read_dir(outdir) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                return Err((
                    1,
                    format!("output dir '{}' exists and is not empty", outdir.display()),
                ));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir_all(outdir)
            .map_err(|e| (1, format!("cannot create '{}': {e}", outdir.display())))?,
        Err(e) => return Err((1, format!("output dir '{}': {e}", outdir.display()))),
    }
    let out = fs::canonicalize(outdir)
        .map_err(|e| (1, format!("cannot resolve '{}': {e}", outdir.display())))?;
    let out_s = out.to_string_lossy();
    if out_s.contains([':', ',', '\\', '\n']) || out.to_str().is_none() {
        return Err((
            1,
            format!("output dir '{out_s}' contains a character that mount options cannot carry"),
        ));
    }
    let mk = |p: &Path| -> Result<(), (u8, String)> {
        fs::create_dir(p).map_err(|e| (1, format!("mkdir '{}': {e}", p.display())))?;
        fs::set_permissions(p, fs::Permissions::from_mode(0o755))
            .map_err(|e| (1, format!("chmod '{}': {e}", p.display())))
    };
    mk(&out.join("lower"))?;
    mk(&out.join("upper"))?;
    mk(&out.join("work"))?;
    let mut lowerdirs = Vec::new();
    for lf in &lowers {
        let dir = out.join("lower").join(&lf.name);
        mk(&dir)?;
        build_layer(&lf.manifest, &dir, forms)
            .map_err(|(l, m)| (1, format!("{}:{l}: {m}", lf.path.display())))?;
        lowerdirs.push(dir);
    }
    if let Some(lf) = &upper {
        build_layer(&lf.manifest, &out.join("upper"), forms)
            .map_err(|(l, m)| (1, format!("{}:{l}: {m}", lf.path.display())))?;
    }
    let lower: Vec<String> = lowerdirs
        .iter()
        .rev()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    println!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        out.join("upper").display(),
        out.join("work").display()
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// dump
// ---------------------------------------------------------------------------

/// FNV-1a, 64 bit.
#[derive(Clone, Copy)]
struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Fnv1a {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
    fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

#[derive(Clone, Copy)]
struct DumpOpts {
    xattrs: bool,
    owner: bool,
}

fn file_type_name(ft: &fs::FileType) -> &'static str {
    if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_char_device() {
        "chr"
    } else if ft.is_block_device() {
        "blk"
    } else {
        "unknown"
    }
}

fn dump_line(root: &Path, rel: &[u8], opts: DumpOpts) -> io::Result<String> {
    let p = if rel == b"." {
        root.to_path_buf()
    } else {
        join(root, rel)
    };
    let md = match fs::symlink_metadata(&p) {
        Ok(md) => md,
        // readdir listed a name that lookup cannot find (the kernel overlay
        // does this for some whiteouts): report it instead of failing.
        Err(e) if rel != b"." && e.raw_os_error().is_some() => {
            let errno = e.raw_os_error().unwrap_or(0);
            return Ok(format!("{} lstat-failed errno={errno}", escape(rel)));
        }
        Err(e) => return Err(e),
    };
    let ft = md.file_type();
    let mut line = format!(
        "{} {} {:04o}",
        escape(rel),
        file_type_name(&ft),
        md.mode() & 0o7777
    );
    if opts.owner {
        line.push_str(&format!(" {}:{}", md.uid(), md.gid()));
    }
    if ft.is_file() {
        // Only regular files are opened; O_NOFOLLOW|O_NONBLOCK guard against
        // the entry being swapped for a symlink or fifo meanwhile.
        let mut f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&p)?;
        let mut h = Fnv1a::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut n = 0u64;
        loop {
            let k = f.read(&mut buf)?;
            if k == 0 {
                break;
            }
            n += k as u64;
            h.update(&buf[..k]);
        }
        line.push_str(&format!(" size={n} fnv1a64={:016x}", h.0));
    } else if ft.is_symlink() {
        let t = fs::read_link(&p)?;
        line.push_str(&format!(" target={}", escape(t.as_os_str().as_bytes())));
    } else if ft.is_char_device() || ft.is_block_device() {
        let rdev = md.rdev();
        line.push_str(&format!(
            " rdev={}:{}",
            libc::major(rdev),
            libc::minor(rdev)
        ));
    }
    if opts.xattrs {
        let mut xs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        match xattr::list(&p) {
            Ok(names) => {
                for n in names {
                    match xattr::get(&p, &n) {
                        Ok(v) => xs.push((n.into_vec(), v.unwrap_or_default())),
                        Err(e) => xs.push((n.into_vec(), format!("<error {e}>").into_bytes())),
                    }
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {}
            Err(e) => return Err(e),
        }
        xs.sort();
        for (n, v) in xs {
            line.push_str(&format!(" xattr.{}={}", escape(&n), escape(&v)));
        }
    }
    Ok(line)
}

fn dump_tree(root: &Path, opts: DumpOpts) -> io::Result<Vec<String>> {
    let md = fs::symlink_metadata(root)?;
    if !md.is_dir() {
        return Err(io::Error::other("not a directory"));
    }
    let mut rels: Vec<Vec<u8>> = vec![b".".to_vec()];
    let mut stack: Vec<Vec<u8>> = vec![Vec::new()];
    while let Some(dir) = stack.pop() {
        let dp = if dir.is_empty() {
            root.to_path_buf()
        } else {
            join(root, &dir)
        };
        for ent in fs::read_dir(&dp)? {
            let ent = ent?;
            let mut rel = dir.clone();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(ent.file_name().as_bytes());
            if ent.file_type()?.is_dir() {
                stack.push(rel.clone());
            }
            rels.push(rel);
        }
    }
    rels.sort();
    let mut lines = Vec::with_capacity(rels.len());
    for r in rels {
        let l = dump_line(root, &r, opts)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", escape(&r))))?;
        lines.push(l);
    }
    Ok(lines)
}

fn cmd_dump(args: &[OsString]) -> Result<(), (u8, String)> {
    let mut opts = DumpOpts {
        xattrs: true,
        owner: true,
    };
    let mut pos = Vec::new();
    for a in args {
        match a.to_str() {
            Some("--no-xattrs") => opts.xattrs = false,
            Some("--no-owner") => opts.owner = false,
            Some(s) if s.starts_with("--") => {
                return Err((2, format!("unknown option '{s}' (see --help)")))
            }
            _ => pos.push(PathBuf::from(a)),
        }
    }
    let [dir] = pos.as_slice() else {
        return Err((2, USAGE.to_string()));
    };
    let lines = dump_tree(dir, opts).map_err(|e| (1, format!("dump '{}': {e}", dir.display())))?;
    let stdout = io::stdout();
    let mut w = io::BufWriter::new(stdout.lock());
    for l in lines {
        writeln!(w, "{l}").map_err(|e| (1, e.to_string()))?;
    }
    w.flush().map_err(|e| (1, e.to_string()))
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let res = match args.first().and_then(|a| a.to_str()) {
        Some("build") => cmd_build(&args[1..]),
        Some("dump") => cmd_dump(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err((2, USAGE.to_string())),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) => {
            eprintln!("plyfs-layers: {msg}");
            ExitCode::from(code)
        }
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Vec<u8>> {
        tokenize(s.as_bytes())
            .unwrap()
            .into_iter()
            .map(|t| t.bytes)
            .collect()
    }

    fn parse(s: &str) -> Manifest {
        parse_manifest(s.as_bytes()).unwrap()
    }

    fn perr(s: &str) -> ParseError {
        parse_manifest(s.as_bytes()).unwrap_err()
    }

    #[test]
    fn tokenize_plain_and_comments() {
        assert_eq!(
            toks("  a  b\tc  "),
            vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
        );
        assert_eq!(toks("a b # c d"), vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(toks("# all comment"), Vec::<Vec<u8>>::new());
        assert_eq!(toks("a#b"), vec![b"a#b".to_vec()]);
        assert_eq!(toks(""), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn tokenize_quotes_and_escapes() {
        assert_eq!(toks(r#""a b" c"#), vec![b"a b".to_vec(), b"c".to_vec()]);
        assert_eq!(toks(r#"content="x y=z""#), vec![b"content=x y=z".to_vec()]);
        assert_eq!(
            toks(r#""\\\"\n\t\s\x41\xff""#),
            vec![b"\\\"\n\t A\xff".to_vec()]
        );
        assert_eq!(toks(r"a\sb"), vec![b"a b".to_vec()]);
        assert_eq!(toks(r#""""#), vec![Vec::new()]);
        assert_eq!(toks(r##""#" x"##), vec![b"#".to_vec(), b"x".to_vec()]);
        let t = tokenize(br#"k\x3dey="v=w""#).unwrap();
        assert_eq!(t[0].bytes, b"k=ey=v=w");
        assert_eq!(t[0].eq, Some(4));
    }

    #[test]
    fn tokenize_errors() {
        assert!(tokenize(br#""open"#).unwrap_err().contains("unterminated"));
        assert!(tokenize(br"a\").unwrap_err().contains("end of line"));
        assert!(tokenize(br"\q").unwrap_err().contains("unknown escape"));
        assert!(tokenize(br"\xg1").unwrap_err().contains("bad \\x"));
        assert!(tokenize(br"\x4").is_err());
    }

    #[test]
    fn escape_roundtrip() {
        let all: Vec<u8> = (0u8..=255).collect();
        let e = escape(&all);
        assert!(!e.contains(' '));
        let t = tokenize(e.as_bytes()).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].bytes, all);
        assert_eq!(t[0].eq, None);
        assert_eq!(tokenize(escape(b"").as_bytes()).unwrap()[0].bytes, b"");
    }

    #[test]
    fn parse_full_entries() {
        let m = parse(
            "# header\n\
             \n\
             bin dir 0755 0:0 mtime=100\n\
             bin/busybox file 4755 0:0 content=\"#!/bin/sh\\necho hi\\n\" xattr.user.a=b\n\
             bin/sh symlink 0777 0:0 target=busybox\n\
             dev/null chr 0666 0:0 rdev=1:3\n\
             big file 0644 1000:100 size=5000\n\
             holes file 0644 0:0 sparse=1048576\n\
             ln hardlink 0644 0:0 target=bin/busybox\n\
             gone whiteout 0000 0:0\n\
             etc dir 0755 0:0 opaque=y ovl.redirect=/x\n",
        );
        let names: Vec<&[u8]> = m.entries.iter().map(|e| e.path.as_slice()).collect();
        assert_eq!(
            names,
            vec![
                &b"bin"[..],
                b"bin/busybox",
                b"bin/sh",
                b"dev",
                b"dev/null",
                b"big",
                b"holes",
                b"ln",
                b"gone",
                b"etc"
            ]
        );
        let bb = &m.entries[1];
        assert_eq!(bb.mode, 0o4755);
        assert_eq!(bb.content, Content::Bytes(b"#!/bin/sh\necho hi\n".to_vec()));
        assert_eq!(bb.xattrs, vec![(b"user.a".to_vec(), b"b".to_vec())]);
        assert_eq!(m.entries[0].mtime, Some(100));
        assert_eq!(m.entries[4].rdev, Some((1, 3)));
        assert_eq!((m.entries[5].uid, m.entries[5].gid), (1000, 100));
        assert_eq!(m.entries[5].content, Content::Pattern(5000));
        assert_eq!(m.entries[6].content, Content::Sparse(1048576));
        assert_eq!(m.entries[7].target.as_deref(), Some(&b"bin/busybox"[..]));
        assert!(m.entries[9].opaque);
        assert_eq!(
            m.entries[9].ovl,
            vec![(b"redirect".to_vec(), b"/x".to_vec())]
        );
    }

    #[test]
    fn implicit_parents() {
        let m = parse("a/b/c/file file 0644 0:0\na/b/d dir 0700 1:1\n");
        let e: Vec<(&[u8], Kind, bool, usize)> = m
            .entries
            .iter()
            .map(|e| (e.path.as_slice(), e.kind, e.implicit, e.line))
            .collect();
        assert_eq!(
            e,
            vec![
                (&b"a"[..], Kind::Dir, true, 1),
                (b"a/b", Kind::Dir, true, 1),
                (b"a/b/c", Kind::Dir, true, 1),
                (b"a/b/c/file", Kind::File, false, 1),
                (b"a/b/d", Kind::Dir, false, 2),
            ]
        );
        assert_eq!(m.entries[0].mode, 0o755);
        assert_eq!((m.entries[0].uid, m.entries[0].gid), (0, 0));
        // A later explicit dir line refines the implicit one in place.
        let m = parse("x/y file 0644 0:0\nx dir 0700 5:6 mtime=7\n");
        assert_eq!(m.entries.len(), 2);
        assert_eq!(m.entries[0].path, b"x");
        assert_eq!(m.entries[0].mode, 0o700);
        assert_eq!(m.entries[0].uid, 5);
        assert!(!m.entries[0].implicit);
    }

    #[test]
    fn quoted_paths() {
        let m = parse("\"dir with space/new\\nline\" file 0644 0:0\nété dir 0755 0:0\n");
        assert_eq!(m.entries[0].path, b"dir with space");
        assert_eq!(m.entries[1].path, b"dir with space/new\nline");
        assert_eq!(m.entries[2].path, "été".as_bytes());
        let long = "n".repeat(255);
        let m = parse(&format!("{long} file 0644 0:0\n"));
        assert_eq!(m.entries[0].path.len(), 255);
        let e = perr(&format!("{long}x file 0644 0:0\n"));
        assert!(e.msg.contains("longer than 255"), "{e:?}");
    }

    #[test]
    fn errors_carry_line_numbers() {
        let cases: &[(&str, usize, &str)] = &[
            (
                "a dir 0755 0:0\n\n  /abs file 0644 0:0\n",
                3,
                "must be relative",
            ),
            ("a/../b file 0644 0:0\n", 1, "'..' component"),
            ("a//b file 0644 0:0\n", 1, "empty component"),
            ("a/./b file 0644 0:0\n", 1, "'.' component"),
            ("# c\na file 0644\n", 2, "field(s)"),
            ("a thing 0644 0:0\n", 1, "unknown type"),
            ("a file 0689 0:0\n", 1, "bad mode"),
            ("a file 17777 0:0\n", 1, "beyond 07777"),
            ("a file 0644 0\n", 1, "bad owner"),
            ("a file 0644 x:0\n", 1, "bad owner"),
            ("a file 0644 0:0 bogus\n", 1, "not KEY=VALUE"),
            ("a file 0644 0:0 colour=red\n", 1, "unknown key"),
            ("a file 0644 0:0 size=1 size=2\n", 1, "twice"),
            ("a file 0644 0:0 size=1 content=x\n", 1, "only one of"),
            ("a file 0644 0:0 size=-1\n", 1, "bad size"),
            ("a file 0644 0:0 sparse=0\n", 1, "at least 1"),
            ("a dir 0755 0:0 content=x\n", 1, "not allowed on a dir"),
            ("a file 0644 0:0 opaque=y\n", 1, "not allowed on a file"),
            ("a dir 0755 0:0 opaque=n\n", 1, "must be 'y'"),
            ("a symlink 0777 0:0\n", 1, "needs target"),
            ("a chr 0666 0:0\n", 1, "needs rdev"),
            ("a blk 0666 0:0 rdev=7\n", 1, "bad rdev"),
            (
                "a whiteout 0000 0:0 mtime=5\n",
                1,
                "not allowed on a whiteout",
            ),
            ("a hardlink 0644 0:0 target=b\n", 1, "not an earlier entry"),
            (
                "d dir 0755 0:0\na hardlink 0644 0:0 target=d\n",
                2,
                "is a dir",
            ),
            (
                "a file 0644 0:0\na file 0644 0:0\n",
                2,
                "duplicate path 'a' (first at line 1)",
            ),
            (
                "a/b file 0644 0:0\na file 0644 0:0\n",
                2,
                "implicitly as a parent dir",
            ),
            (
                "a file 0644 0:0\n\na/b file 0644 0:0\n",
                3,
                "parent 'a' is a file (line 1)",
            ),
            (
                "w whiteout 0000 0:0\nw/x file 0644 0:0\n",
                2,
                "parent 'w' is a whiteout",
            ),
            ("a file 0644 0:0 xattr.plain=1\n", 1, "no namespace"),
            (
                "a symlink 0777 0:0 target=b xattr.user.x=1\n",
                1,
                "not on a symlink",
            ),
            ("a fifo 0644 0:0 xattr.user.x=1\n", 1, "not on a fifo"),
            (
                "a chr 0644 0:0 rdev=1:1 xattr.trusted.x=1 xattr.user.y=2\n",
                1,
                "not on a chr",
            ),
            ("a file 0644 0:0 mtime=soon\n", 1, "bad mtime"),
            ("a\n\n\nb file 0644 0:0 content=\"x\n", 1, "field(s)"),
            (
                "ok file 0644 0:0\nb file 0644 0:0 content=\"x\n",
                2,
                "unterminated",
            ),
        ];
        for (text, line, msg) in cases {
            let e = perr(text);
            assert_eq!(e.line, *line, "{text:?} -> {e:?}");
            assert!(e.msg.contains(msg), "{text:?}: {:?} lacks {msg:?}", e.msg);
        }
    }

    #[test]
    fn layer_names() {
        assert!(is_lower_name("00-base"));
        assert!(is_lower_name("10-app-extra"));
        assert!(!is_lower_name("base"));
        assert!(!is_lower_name("x0-base"));
        assert!(!is_lower_name("00-"));
        assert!(!is_lower_name("00-a:b"));
        assert!(!is_lower_name("00-a,b"));
    }

    #[test]
    fn fnv_vectors() {
        let h = |s: &[u8]| {
            let mut f = Fnv1a::new();
            f.update(s);
            f.0
        };
        assert_eq!(h(b""), 0xcbf29ce484222325);
        assert_eq!(h(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(h(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn aufs_form_rejects_wh_names() {
        let m = parse("x/.wh.y file 0644 0:0\n");
        let f = Forms {
            whiteout: WhiteoutForm::Aufs,
            opaque: OpaqueForm::Xattr,
            ns: "trusted",
        };
        assert_eq!(check_forms(&m, f).unwrap_err().line, 1);
        let f = Forms {
            whiteout: WhiteoutForm::Chardev,
            ..f
        };
        assert!(check_forms(&m, f).is_ok());
    }
}
