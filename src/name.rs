//! A name in a directory, as the nodes keep it: short names inline, long ones shared.
//!
//! There is a node per inode the kernel holds, and each keeps its name twice (its link and its
//! real object's location). A heap name costs an allocation of its own (48 bytes with the
//! allocator's header for a typical 13-byte name); most names are short, so a name of up to
//! `INLINE` bytes is kept inside the node instead, and only a longer one is allocated (once, and
//! shared by the clones).
//!
//! Invariants: the bytes never hold a NUL; an inline name keeps its terminating NUL after them.

use std::ffi::{CStr, CString};
use std::fmt;
use std::sync::Arc;

/// The longest name kept inline (bytes, without the NUL).
pub const INLINE: usize = 21;

#[derive(Clone)]
pub struct Name(Repr);

#[derive(Clone)]
enum Repr {
    /// `len` bytes, then a NUL, then zeros.
    Inline {
        len: u8,
        bytes: [u8; INLINE + 1],
    },
    Shared(Arc<CStr>),
}

impl Name {
    pub fn new(name: &CStr) -> Name {
        let b = name.to_bytes_with_nul();
        if b.len() <= INLINE + 1 {
            let mut bytes = [0; INLINE + 1];
            bytes[..b.len()].copy_from_slice(b);
            Name(Repr::Inline {
                len: (b.len() - 1) as u8,
                bytes,
            })
        } else {
            Name(Repr::Shared(name.into()))
        }
    }
}

impl std::ops::Deref for Name {
    type Target = CStr;
    fn deref(&self) -> &CStr {
        match &self.0 {
            // The NUL after `len` bytes is there by construction (and the only one before it).
            Repr::Inline { len, bytes } => {
                CStr::from_bytes_with_nul(&bytes[..usize::from(*len) + 1]).unwrap_or(c"")
            }
            Repr::Shared(s) => s,
        }
    }
}

impl From<&CStr> for Name {
    fn from(name: &CStr) -> Name {
        Name::new(name)
    }
}

impl From<CString> for Name {
    fn from(name: CString) -> Name {
        Name::new(&name)
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        **self == **other
    }
}

impl Eq for Name {}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_names_read_back() {
        for n in [
            c"",
            c"a",
            c"exactly-twenty-one-ch",
            c"twenty-two-characters!",
            c"a much longer name than any inline one",
        ] {
            let name = Name::new(n);
            assert_eq!(&*name, n);
            assert_eq!(&*name.clone(), n);
        }
        assert!(matches!(
            Name::new(c"exactly-twenty-one-ch").0,
            Repr::Inline { .. }
        ));
        assert!(matches!(
            Name::new(c"twenty-two-characters!").0,
            Repr::Shared(_)
        ));
        assert_eq!(std::mem::size_of::<Name>(), 24);
    }
}
