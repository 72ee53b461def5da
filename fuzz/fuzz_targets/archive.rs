//! The runner-release extractor on any bytes: no panic, and nothing outside the destination
//! (a sibling file must survive unchanged). Seed corpus: `tests/fixtures/fuzz-corpus/archive/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let sandbox = tempfile::tempdir().expect("temp dir");
    let root = sandbox.path();
    std::fs::create_dir(root.join("outside")).expect("mkdir");
    std::fs::write(root.join("outside/secret"), b"secret").expect("write");
    let tarball = root.join("in.tar.gz");
    std::fs::write(&tarball, data).expect("write archive");
    let dest = root.join("dest");
    if corral::bases::extract_archive(&tarball, &dest).is_err() {
        std::fs::remove_dir_all(&dest).expect("a refused tree is removable");
    }
    assert_eq!(
        std::fs::read(root.join("outside/secret")).expect("secret is still there"),
        b"secret"
    );
    let mut top: Vec<_> = std::fs::read_dir(root)
        .expect("list sandbox")
        .map(|e| e.expect("entry").file_name())
        .collect();
    top.sort();
    assert!(top.len() <= 3, "nothing new beside dest: {top:?}");
});
