//! Runner tarballs for `corral base install` tests: one built from a [`FakeRunnerInstall`]
//! directory with members `./`, `./bin/...`, `./config.sh` like the real one (modes and symlinks
//! kept), and malicious ones that try to write outside the destination.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use flate2::write::GzEncoder;
use flate2::Compression;
use sha2::{Digest, Sha256};
use tar::{Builder, EntryType, Header};

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The `.tar.gz` of `dir`, members named `./…` (the real tarball's `tar -C dir .`).
pub fn tar_gz_of_dir(dir: &Path) -> io::Result<Vec<u8>> {
    let mut builder = Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    append(&mut builder, "./", EntryType::Directory, 0o755, None, &[])?;
    add_tree(&mut builder, dir, "./")?;
    builder.into_inner()?.finish()
}

fn add_tree<W: Write>(builder: &mut Builder<W>, dir: &Path, prefix: &str) -> io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        let meta = fs::symlink_metadata(&path)?;
        let mode = meta.permissions().mode() & 0o7777;
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&path)?;
            let target = target.to_string_lossy();
            append(
                builder,
                &name,
                EntryType::Symlink,
                0o777,
                Some(&target),
                &[],
            )?;
        } else if meta.is_dir() {
            append(
                builder,
                &format!("{name}/"),
                EntryType::Directory,
                mode,
                None,
                &[],
            )?;
            add_tree(builder, &path, &format!("{name}/"))?;
        } else {
            let data = fs::read(&path)?;
            append(builder, &name, EntryType::Regular, mode, None, &data)?;
        }
    }
    Ok(())
}

/// Appends one member with its name and link name written as raw bytes, so nothing the tar
/// crate would refuse (`..`, absolute paths) is rewritten: the archive says exactly this.
pub fn append<W: Write>(
    builder: &mut Builder<W>,
    name: &str,
    kind: EntryType,
    mode: u32,
    link: Option<&str>,
    data: &[u8],
) -> io::Result<()> {
    let mut header = Header::new_gnu();
    let old = header.as_old_mut();
    assert!(name.len() < old.name.len(), "member name too long: {name}");
    old.name[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(link) = link {
        assert!(
            link.len() < old.linkname.len(),
            "link name too long: {link}"
        );
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(data.len() as u64);
    header.set_mtime(1_700_000_000);
    header.set_cksum();
    builder.append(&header, data)
}

/// A way an archive tries to escape its destination.
#[derive(Clone, Copy, Debug)]
pub enum Evil {
    /// A file `./../../../outside/pwned`.
    ParentDir,
    /// A file at `<outside>/pwned`, an absolute path.
    Absolute,
    /// `./escape -> ../../../outside`, then a file `./escape/pwned` through it.
    SymlinkOut,
    /// `./a -> .` and `./b -> a/..`: each looks inside, `b` resolves to the parent.
    SymlinkChain,
    /// A hard link `./stolen` to `<outside>/secret`.
    HardLinkOut,
    /// A fifo `./bin/pipe`.
    Fifo,
}

/// A `.tar.gz` with a harmless `./bin/` first, then the escape; `outside` is the sentinel dir,
/// three levels above the extraction directory (`<tmp>/state/bases/.tmp-*`).
pub fn malicious_tar_gz(evil: Evil, outside: &Path) -> io::Result<Vec<u8>> {
    let mut b = Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    append(&mut b, "./", EntryType::Directory, 0o755, None, &[])?;
    append(&mut b, "./bin/", EntryType::Directory, 0o755, None, &[])?;
    append(
        &mut b,
        "./bin/Runner.Listener",
        EntryType::Regular,
        0o755,
        None,
        b"x",
    )?;
    let outside_abs = outside.to_string_lossy();
    let reg = EntryType::Regular;
    match evil {
        Evil::ParentDir => append(&mut b, "./../../../outside/pwned", reg, 0o644, None, b"!")?,
        Evil::Absolute => append(
            &mut b,
            &format!("{outside_abs}/pwned"),
            reg,
            0o644,
            None,
            b"!",
        )?,
        Evil::SymlinkOut => {
            let link = Some("../../../outside");
            append(&mut b, "./escape", EntryType::Symlink, 0o777, link, &[])?;
            append(&mut b, "./escape/pwned", reg, 0o644, None, b"!")?;
        }
        Evil::SymlinkChain => {
            append(&mut b, "./a", EntryType::Symlink, 0o777, Some("."), &[])?;
            append(&mut b, "./b", EntryType::Symlink, 0o777, Some("a/.."), &[])?;
        }
        Evil::HardLinkOut => {
            let link = format!("{outside_abs}/secret");
            append(&mut b, "./stolen", EntryType::Link, 0o644, Some(&link), &[])?;
        }
        Evil::Fifo => append(&mut b, "./bin/pipe", EntryType::Fifo, 0o644, None, &[])?,
    }
    b.into_inner()?.finish()
}
