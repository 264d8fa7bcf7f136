//! plyfs: an overlay (union) filesystem in userspace. The crate root only declares the modules;
//! `main.rs` is the command line and `fs.rs` the FUSE entry points. See DESIGN.md for the map.

pub mod acl;
pub mod cache;
pub mod config;
pub mod copy_up;
pub mod dir;
pub mod export;
pub mod file;
pub mod fs;
pub mod index;
pub mod inode;
pub mod layer;
pub mod mount;
pub mod namei;
pub mod node;
pub mod nodetable;
pub mod notify;
pub mod origin;
pub mod ovl;
pub mod readdir;
pub mod realops;
pub mod reconnect;
pub mod record;
pub mod sys;
pub mod watch;
pub mod work;
pub mod xattr;
