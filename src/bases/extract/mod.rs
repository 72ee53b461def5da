//! Extracting a runner tarball in Rust, refusing anything that could land outside the tree.
//!
//! Invariants: every path written is `dest` joined with a relative path of normal components
//! whose ancestors are real directories created here (never a symlink); a file is created with
//! `O_EXCL`, so it never writes through a link; symlinks and hard links must resolve inside
//! `dest`; devices and fifos are refused. A refusal names the entry; the caller deletes `dest`.
//!
//! Bounded ([`Limits`]): file bytes and entries are counted, and a file whose declared size
//! would pass the limit is refused before a byte of it is written, so a gzip bomb costs no
//! disk; everything the tar reader reads that is not file data (headers, long names, PAX
//! records, which it buffers in memory) has a budget of its own. Links are checked in
//! `links.rs`.

use std::cell::Cell;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;
use tar::{Archive, Entry, EntryType};

use super::error::BasesError;

mod links;

use links::{make_hard_link, make_symlink, resolves_inside};

/// Permission bits kept from the archive: no set-id or sticky bits from a download.
const MODE_MASK: u32 = 0o777;

/// How much one archive may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of file data in all (a runner release holds well under 1 GiB).
    pub file_bytes: u64,
    /// Entries of any kind (a runner release has about 10,000).
    pub entries: usize,
    /// Bytes the tar reader reads besides file data: headers, long names, PAX records.
    pub metadata_bytes: u64,
}

impl Limits {
    /// For runner releases: 4 GiB of files, 200,000 entries, 128 MiB of headers.
    pub const RUNNER_RELEASE: Limits = Limits {
        file_bytes: 4 << 30,
        entries: 200_000,
        metadata_bytes: 128 << 20,
    };
}

/// Counts what the tar reader reads from the decompressed stream; while `in_file` is unset,
/// against the metadata budget.
struct Metered<R> {
    inner: R,
    meter: std::rc::Rc<Meter>,
}

struct Meter {
    in_file: Cell<bool>,
    metadata: Cell<u64>,
    limit: u64,
}

impl<R: io::Read> io::Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if !self.meter.in_file.get() {
            let total = self.meter.metadata.get() + n as u64;
            self.meter.metadata.set(total);
            if total > self.meter.limit {
                return Err(io::Error::other(format!(
                    "headers and names take more than {} MiB",
                    self.meter.limit >> 20
                )));
            }
        }
        Ok(n)
    }
}

/// Extracts the gzip'd tar `tarball` into `dest`, which must not exist yet, within
/// [`Limits::RUNNER_RELEASE`]; returns how many entries were written. Public for the fuzz
/// target and the corpus replay (`fuzz/`).
pub fn extract(tarball: &Path, dest: &Path) -> Result<usize, BasesError> {
    extract_within(tarball, dest, Limits::RUNNER_RELEASE)
}

/// [`extract`] within `limits`.
pub fn extract_within(tarball: &Path, dest: &Path, limits: Limits) -> Result<usize, BasesError> {
    let archive_err = |source| BasesError::Archive {
        path: tarball.to_path_buf(),
        source,
    };
    let file = File::open(tarball).map_err(|e| BasesError::io("open", tarball, e))?;
    fs::create_dir(dest).map_err(|e| BasesError::io("create directory", dest, e))?;
    let meter = std::rc::Rc::new(Meter {
        in_file: Cell::new(false),
        metadata: Cell::new(0),
        limit: limits.metadata_bytes,
    });
    let mut archive = Archive::new(Metered {
        inner: GzDecoder::new(io::BufReader::new(file)),
        meter: std::rc::Rc::clone(&meter),
    });
    let mut placed = Extraction {
        dest,
        limits,
        meter: &meter,
        dirs: Vec::new(),
        links: Vec::new(),
        file_bytes: 0,
    };
    let mut count = 0_usize;
    for entry in archive.entries().map_err(archive_err)? {
        let mut entry = entry.map_err(archive_err)?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if count >= limits.entries {
            return Err(BasesError::unsafe_entry(
                name,
                format!("the archive has more than {} entries", limits.entries),
            ));
        }
        let Some(rel) = relative(&name).map_err(|r| BasesError::unsafe_entry(&name, r))? else {
            continue; // `./` itself
        };
        prepare_parents(dest, &rel, &name)?;
        let mode = entry.header().mode().map_err(archive_err)? & MODE_MASK;
        if placed.place(&mut entry, rel, name, mode)? {
            count += 1;
        }
    }
    finish(dest, &placed.links, placed.dirs)?;
    Ok(count)
}

/// One extraction under way: where to, within what, and what [`finish`] needs of the
/// entries placed so far.
struct Extraction<'a> {
    dest: &'a Path,
    limits: Limits,
    meter: &'a Meter,
    /// Directories and their modes, set last.
    dirs: Vec<(PathBuf, u32)>,
    /// Symlinks, checked again once all are in place.
    links: Vec<(PathBuf, String)>,
    /// File bytes declared so far.
    file_bytes: u64,
}

impl Extraction<'_> {
    /// Writes `entry` at `dest/rel` (its parents ready); false for an entry that writes
    /// nothing and does not count (a global PAX header).
    fn place<R: io::Read>(
        &mut self,
        entry: &mut Entry<'_, R>,
        rel: PathBuf,
        name: String,
        mode: u32,
    ) -> Result<bool, BasesError> {
        let dest = self.dest;
        match entry.header().entry_type() {
            EntryType::Directory => {
                make_dir(dest, &rel, &name)?;
                self.dirs.push((rel, mode));
            }
            EntryType::Regular | EntryType::Continuous => {
                // Checked on the declared size, before a byte is written.
                self.file_bytes = self.file_bytes.saturating_add(entry.size());
                if self.file_bytes > self.limits.file_bytes {
                    return Err(BasesError::unsafe_entry(
                        name,
                        format!(
                            "the archive's files exceed {} MiB",
                            self.limits.file_bytes >> 20
                        ),
                    ));
                }
                self.meter.in_file.set(true);
                let written = write_file(entry, dest, &rel, mode);
                self.meter.in_file.set(false);
                written?;
            }
            EntryType::Symlink => {
                make_symlink(entry, dest, &rel, &name)?;
                self.links.push((rel, name));
            }
            EntryType::Link => make_hard_link(entry, dest, &rel, &name)?,
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                return Err(BasesError::unsafe_entry(
                    name,
                    "device or fifo entries are refused",
                ));
            }
            EntryType::XGlobalHeader => return Ok(false),
            other => {
                return Err(BasesError::unsafe_entry(
                    name,
                    format!("unsupported entry type {other:?}"),
                ));
            }
        }
        Ok(true)
    }
}

/// With every entry in place: each symlink must still resolve inside, through the others; then
/// directory modes, deepest first, so a read-only directory did not block its own entries.
fn finish(
    dest: &Path,
    links: &[(PathBuf, String)],
    mut dirs: Vec<(PathBuf, u32)>,
) -> Result<(), BasesError> {
    for (rel, name) in links {
        if !resolves_inside(dest, rel) {
            return Err(BasesError::unsafe_entry(
                name,
                "symlink resolves outside the tree",
            ));
        }
    }
    dirs.sort_by_key(|(rel, _)| std::cmp::Reverse(rel.components().count()));
    for (rel, mode) in dirs {
        let path = dest.join(rel);
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(|e| BasesError::io("set the mode of", path, e))?;
    }
    Ok(())
}

/// The entry's path as normal components; `None` for the root itself.
fn relative(name: &str) -> Result<Option<PathBuf>, &'static str> {
    let mut rel = PathBuf::new();
    for component in Path::new(name).components() {
        match component {
            Component::CurDir => {}
            Component::Normal(part) => rel.push(part),
            Component::ParentDir => return Err("`..` components are refused"),
            Component::RootDir | Component::Prefix(_) => return Err("absolute paths are refused"),
        }
    }
    Ok((!rel.as_os_str().is_empty()).then_some(rel))
}

/// Creates missing ancestors of `rel` as directories; refuses one that is a symlink or file.
fn prepare_parents(dest: &Path, rel: &Path, name: &str) -> Result<(), BasesError> {
    let mut current = dest.to_path_buf();
    let Some(parent) = rel.parent() else {
        return Ok(());
    };
    for component in parent.components() {
        current.push(component);
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(BasesError::unsafe_entry(
                    name,
                    "a parent directory is a symlink or a file",
                ))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => fs::create_dir(&current)
                .map_err(|e| BasesError::io("create directory", &current, e))?,
            Err(e) => return Err(BasesError::io("inspect", &current, e)),
        }
    }
    Ok(())
}

/// Makes room for a non-directory entry: a previous non-directory of that name is replaced.
fn clear(path: &Path, name: &str) -> Result<(), BasesError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => Err(BasesError::unsafe_entry(
            name,
            "replaces a directory of the same name",
        )),
        Ok(_) => fs::remove_file(path).map_err(|e| BasesError::io("remove", path, e)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(BasesError::io("inspect", path, e)),
    }
}

fn make_dir(dest: &Path, rel: &Path, name: &str) -> Result<(), BasesError> {
    let path = dest.join(rel);
    match fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(BasesError::unsafe_entry(
            name,
            "a directory replaces a file or symlink",
        )),
        Err(_) => fs::create_dir(&path).map_err(|e| BasesError::io("create directory", path, e)),
    }
}

fn write_file<R: io::Read>(
    entry: &mut Entry<'_, R>,
    dest: &Path,
    rel: &Path,
    mode: u32,
) -> Result<(), BasesError> {
    let path = dest.join(rel);
    clear(&path, &rel.to_string_lossy())?;
    let write = |e| BasesError::io("write", &path, e);
    // `create_new` is O_CREAT|O_EXCL: it fails on any existing name, a symlink included.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(write)?;
    io::copy(entry, &mut file).map_err(write)?;
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(write)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    const SMALL: Limits = Limits {
        file_bytes: 1 << 20,
        entries: 10,
        metadata_bytes: 1 << 20,
    };

    fn gzip(tar: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(tar).expect("gzip");
        gz.finish().expect("gzip")
    }

    fn refused(tar: &[u8], why: &str) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let tarball = tmp.path().join("in.tar.gz");
        std::fs::write(&tarball, gzip(tar)).expect("write");
        let dest = tmp.path().join("dest");
        let err = extract_within(&tarball, &dest, SMALL).expect_err("refused");
        let text = format!(
            "{err}: {}",
            err.source().map(ToString::to_string).unwrap_or_default()
        );
        assert!(text.contains(why), "{text}");
        let mut written = 0;
        for entry in std::fs::read_dir(&dest).into_iter().flatten().flatten() {
            written += entry.metadata().map_or(0, |m| m.len());
        }
        assert!(written <= SMALL.file_bytes, "{written} bytes written");
    }

    fn file_header(path: &str, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_path(path).expect("path");
        header.set_size(size);
        header.set_mode(0o644);
        header.set_entry_type(EntryType::Regular);
        header.set_cksum();
        header
    }

    use std::error::Error as _;

    #[test]
    fn a_file_declared_past_the_limit_is_refused_before_it_is_written() {
        // A header claiming 1 TiB, followed by a little data: nothing is written at all.
        let mut tar = file_header("bin/huge", 1 << 40).as_bytes().to_vec();
        tar.extend(vec![0_u8; 4096]);
        refused(&tar, "the archive's files exceed 1 MiB");
        // Many files, each under the limit, together past it.
        let mut builder = tar::Builder::new(Vec::new());
        for i in 0..3 {
            let data = vec![0_u8; 400 << 10];
            builder
                .append(&file_header(&format!("f{i}"), data.len() as u64), &data[..])
                .expect("append");
        }
        refused(
            &builder.into_inner().expect("tar"),
            "the archive's files exceed 1 MiB",
        );
    }

    #[test]
    fn too_many_entries_are_refused() {
        let mut builder = tar::Builder::new(Vec::new());
        for i in 0..11 {
            builder
                .append(&file_header(&format!("f{i}"), 0), &[][..])
                .expect("append");
        }
        refused(&builder.into_inner().expect("tar"), "more than 10 entries");
    }

    #[test]
    fn a_long_name_larger_than_the_header_budget_is_refused() {
        // GNU long-name records are read into memory by the tar reader: 2 MiB of name.
        let mut long = tar::Header::new_gnu();
        long.set_path("././@LongLink").expect("path");
        long.set_entry_type(EntryType::GNULongName);
        long.set_size(2 << 20);
        long.set_cksum();
        let mut tar = long.as_bytes().to_vec();
        tar.extend(vec![b'a'; 2 << 20]);
        tar.extend(file_header("x", 0).as_bytes());
        tar.extend(vec![0_u8; 1024]);
        refused(&tar, "headers and names take more than 1 MiB");
    }
}
