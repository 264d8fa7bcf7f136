//! plyfs: an overlay (union) filesystem in userspace. The crate root only declares the modules;
//! `main.rs` is the command line, `ops.rs` the request handlers, and `fs.rs` (fuser) and `uring/`
//! the transports that bring requests to them. See DESIGN.md for the map.

pub mod acl;
pub mod ahead;
pub mod cache;
pub mod config;
pub mod copy_up;
pub mod dir;
pub mod export;
pub mod file;
pub mod fs;
pub mod idmap;
pub mod index;
pub mod inode;
pub mod killpriv;
pub mod layer;
pub mod mount;
pub mod name;
pub mod namei;
pub mod node;
pub mod nodetable;
pub mod notify;
pub mod ops;
pub mod origin;
pub mod override_stat;
pub mod ovl;
pub mod readdir;
pub mod realops;
pub mod reconnect;
pub mod record;
pub mod reply;
pub mod statahead;
pub mod sys;
pub mod uring;
pub mod watch;
pub mod work;
pub mod xattr;
