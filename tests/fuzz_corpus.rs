//! The fuzz corpus (`tests/fixtures/fuzz-corpus/`) replayed through the fuzz targets' entry
//! points (`fuzz/fuzz_targets/`), plus a seeded mutation loop over both, so `cargo test`
//! catches what fuzzing found without cargo-fuzz. `CORRAL_FUZZ_SEED` and
//! `CORRAL_FUZZ_ITERATIONS` change the loop's seed and length.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::kit::rng::Rng;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fuzz-corpus");
const DEFAULT_SEED: u64 = 0x5eed_f022;
const CONFIG_ITERATIONS: u64 = 3000;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn corpus(kind: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(Path::new(CORPUS).join(kind))
        .expect("corpus directory")
        .map(|e| {
            let path = e.expect("entry").path();
            let bytes = std::fs::read(&path).expect("read corpus file");
            (path, bytes)
        })
        .collect();
    files.sort();
    assert!(files.len() >= 4, "the {kind} corpus is there");
    files
}

/// The config target: any bytes, never a panic.
fn config_target(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes).into_owned();
    std::panic::catch_unwind(|| {
        let _ = corral::config::parse(&text, Path::new("runners.yaml"));
    })
    .is_ok()
}

/// Everything below `dir` (not following links), relative, with each file's bytes.
fn snapshot(dir: &Path) -> BTreeSet<(PathBuf, Vec<u8>)> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).expect("lstat");
            let rel = path.strip_prefix(dir).expect("below").to_path_buf();
            if meta.is_dir() {
                stack.push(path);
                out.insert((rel, Vec::new()));
            } else if meta.is_file() {
                out.insert((rel, std::fs::read(&path).unwrap_or_default()));
            } else {
                let target = std::fs::read_link(&path).unwrap_or_default();
                out.insert((rel, target.into_os_string().into_encoded_bytes()));
            }
        }
    }
    out
}

/// The archive target: any bytes extract or fail without a panic, and nothing is written
/// outside `dest` (a sibling `outside/secret` and the rest of the sandbox stay as they were;
/// after a success every path inside `dest` resolves inside it, after a refusal `dest` is
/// deleted as the caller does).
fn archive_target(bytes: &[u8]) -> Result<bool, String> {
    let sandbox = tempfile::tempdir().expect("temp dir");
    let root = sandbox.path();
    std::fs::create_dir(root.join("outside")).expect("mkdir");
    std::fs::write(root.join("outside/secret"), b"secret").expect("write");
    let tarball = root.join("in.tar.gz");
    std::fs::write(&tarball, bytes).expect("write archive");
    let dest = root.join("dest");
    let before = snapshot(root);
    let Ok(outcome) = std::panic::catch_unwind(|| corral::bases::extract_archive(&tarball, &dest))
    else {
        return Err("panicked".into());
    };
    if outcome.is_err() {
        // As the caller does (bases/mod.rs): a refused archive's tree is deleted whole.
        std::fs::remove_dir_all(&dest).map_err(|e| format!("remove dest: {e}"))?;
    }
    let after: BTreeSet<_> = snapshot(root)
        .into_iter()
        .filter(|(p, _)| !p.starts_with("dest"))
        .collect();
    let before: BTreeSet<_> = before.into_iter().collect();
    if after != before {
        return Err(format!("written outside dest: {after:?} vs {before:?}"));
    }
    let dest_real = dest.canonicalize().unwrap_or_else(|_| dest.clone());
    for (rel, _) in snapshot(&dest) {
        if let Ok(real) = dest.join(&rel).canonicalize() {
            if !real.starts_with(&dest_real) {
                return Err(format!("{} resolves to {}", rel.display(), real.display()));
            }
        }
    }
    if std::path::Path::new("/tmp/corral-fuzz-pwned").exists() {
        return Err("wrote an absolute path".into());
    }
    Ok(outcome.is_ok())
}

#[test]
fn config_corpus_never_panics() {
    for (path, bytes) in corpus("config") {
        assert!(config_target(&bytes), "panicked on {}", path.display());
    }
}

#[test]
fn archive_corpus_stays_inside_the_destination() {
    let mut extracted = Vec::new();
    for (path, bytes) in corpus("archive") {
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        match archive_target(&bytes) {
            Ok(true) => extracted.push(name),
            Ok(false) => {}
            Err(why) => panic!("{name}: {why}"),
        }
    }
    assert_eq!(extracted, ["good.tar.gz"], "only the good one extracts");
}

/// One random edit: flip, insert, delete, duplicate or splice bytes.
fn mutate(rng: &mut Rng, data: &mut Vec<u8>, alphabet: &[u8], donors: &[Vec<u8>]) {
    let at = rng.below(data.len() + 1);
    match rng.below(6) {
        0 if !data.is_empty() => {
            let i = rng.below(data.len());
            data[i] ^= 1 << rng.below(8);
        }
        1 => data.insert(at, alphabet[rng.below(alphabet.len())]),
        2 if at < data.len() => {
            let end = (at + 1 + rng.below(16)).min(data.len());
            data.drain(at..end);
        }
        3 if at < data.len() => {
            let end = (at + 1 + rng.below(64)).min(data.len());
            let piece = data[at..end].to_vec();
            let to = rng.below(data.len() + 1);
            data.splice(to..to, piece);
        }
        4 => {
            let donor = &donors[rng.below(donors.len())];
            let from = rng.below(donor.len());
            let end = (from + 1 + rng.below(64)).min(donor.len());
            data.splice(at..at, donor[from..end].iter().copied());
        }
        _ => {
            let i = rng.below(data.len().max(1));
            data.truncate(i);
        }
    }
}

#[test]
fn mutated_configs_never_panic() {
    let seed = env_u64("CORRAL_FUZZ_SEED", DEFAULT_SEED);
    let iterations = env_u64("CORRAL_FUZZ_ITERATIONS", CONFIG_ITERATIONS);
    let seeds: Vec<Vec<u8>> = corpus("config").into_iter().map(|(_, b)| b).collect();
    let alphabet = b":-[]{}&*!|>'\"#%@`,?\n \t0123456789abcxyz.\\/\xd0\xb0";
    let mut rng = Rng::new(seed);
    for i in 0..iterations {
        let mut data = seeds[rng.below(seeds.len())].clone();
        for _ in 0..=rng.below(4) {
            mutate(&mut rng, &mut data, alphabet, &seeds);
        }
        assert!(
            config_target(&data),
            "iteration {i} (CORRAL_FUZZ_SEED={seed}) panicked on:\n{}",
            String::from_utf8_lossy(&data)
        );
    }
}

fn gunzip(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

#[test]
fn mutated_archives_stay_inside_the_destination() {
    let seed = env_u64("CORRAL_FUZZ_SEED", DEFAULT_SEED);
    // A third as many as configs: each one extracts into a fresh directory.
    let iterations = env_u64("CORRAL_FUZZ_ITERATIONS", CONFIG_ITERATIONS) / 3;
    // Mutating the tar stream, not the gzip one: most gzip edits only fail the checksum.
    let tars: Vec<Vec<u8>> = corpus("archive")
        .into_iter()
        .filter_map(|(_, b)| gunzip(&b))
        .collect();
    let alphabet = b"./\0\x30\x31\x32\x35\x36 ustar..etcbin";
    let mut rng = Rng::new(seed.max(1) ^ 0xa5a5);
    for i in 0..iterations {
        let mut data = tars[rng.below(tars.len())].clone();
        for _ in 0..=rng.below(3) {
            mutate(&mut rng, &mut data, alphabet, &tars);
        }
        if let Err(why) = archive_target(&gzip(&data)) {
            panic!("iteration {i} (CORRAL_FUZZ_SEED={seed}): {why}");
        }
    }
}
