//! The fuzz targets' bodies (`fuzz/bodies.rs`) on stable Rust, for a bounded count with a
//! fixed seed (any user, no mount): random bytes, and mutations of well-formed values (an
//! origin, redirects, ACLs, owner overrides, option strings), into the option parser and every
//! on-disk decoder.
//! Nothing may panic. `PLYFS_DECODER_ROUNDS=N` runs longer; `cargo +nightly fuzz run xattrs`
//! (and `options`) is the coverage-guided run (README).

mod common;

#[path = "../fuzz/bodies.rs"]
mod bodies;

use common::Rng;

fn rounds() -> usize {
    std::env::var("PLYFS_DECODER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

/// Well-formed values to mutate: the first byte picks the decoder in `bodies::xattrs`.
fn xattr_seeds() -> Vec<Vec<u8>> {
    let mut origin = vec![0u8, 0x00, 0xfb, 0, 0x01, 1];
    origin.extend_from_slice(&[0x5a; 16]);
    origin.extend_from_slice(&[12, 0, 0, 0, 7, 0, 0, 0]);
    origin[3] = (origin.len() - 1) as u8;
    let mut acl = vec![3u8];
    acl.extend_from_slice(&2u32.to_le_bytes());
    for (tag, perm, id) in [
        (1u16, 7u16, u32::MAX),
        (2, 5, 1000),
        (4, 5, u32::MAX),
        (0x10, 7, u32::MAX),
        (0x20, 0, u32::MAX),
    ] {
        acl.extend_from_slice(&tag.to_le_bytes());
        acl.extend_from_slice(&perm.to_le_bytes());
        acl.extend_from_slice(&id.to_le_bytes());
    }
    let mut slot = vec![2u8];
    slot.extend_from_slice(b"PLYR");
    slot.resize(65, 0);
    vec![
        origin,
        [&[1u8][..], b"/usr/share/doc"].concat(),
        [&[1u8][..], b"name"].concat(),
        acl,
        slot,
        [
            &[4u8][..],
            b"trusted.overlay.origin\0user.a\0security.capability\0",
        ]
        .concat(),
        [&[6u8][..], b"100000:100000:04711:file"].concat(),
        [&[6u8][..], b"0:5:0620:char-1-3"].concat(),
        [&[6u8][..], b"0:0:100644"].concat(),
        [
            &[7u8][..],
            &[1],
            &12u32.to_ne_bytes()[..],
            &99u32.to_ne_bytes()[..],
        ]
        .concat(),
    ]
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(4) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            1 if !v.is_empty() => {
                let n = rng.below(v.len());
                v.truncate(n.max(1));
            }
            2 => v.push(rng.next() as u8),
            _ => {
                let i = rng.below(v.len() + 1);
                v.insert(i, [0u8, b'/', b',', b'=', b':', 0xff][rng.below(6)]);
            }
        }
    }
    v
}

fn random(rng: &mut Rng, max: usize) -> Vec<u8> {
    (0..rng.below(max)).map(|_| rng.next() as u8).collect()
}

#[test]
fn decoders_never_panic() {
    let mut rng = Rng(0x00de_c0de_5eed);
    let seeds = xattr_seeds();
    let n = rounds();
    for _ in 0..n {
        bodies::xattrs(&random(&mut rng, 96));
        let s = &seeds[rng.below(seeds.len())];
        bodies::xattrs(&mutate(&mut rng, s));
    }
    println!("decoders: {} inputs", 2 * n);
}

#[test]
fn option_parser_never_panics() {
    let mut rng = Rng(0x0000_0b75_5eed);
    let seeds: Vec<&[u8]> = vec![
        b"lowerdir=/a:/b,upperdir=/u,workdir=/w",
        b"lowerdir=/l,uidmapping=:0:1000:1:1:100000:65536,squash_to_uid=5,threads=3",
        b"lowerdir=/l\\:x,,timeout=1.5,cache_entries=9,redirect_dir=on,index=off,,",
        b"-f\0-o\0lowerdir=/l\0/mnt\0-d",
        b"--version",
    ];
    let n = rounds() / 10;
    for _ in 0..n {
        bodies::options(&random(&mut rng, 64));
        let s = seeds[rng.below(seeds.len())];
        bodies::options(&mutate(&mut rng, s));
    }
    println!("option parser: {} inputs", 2 * n);
}
