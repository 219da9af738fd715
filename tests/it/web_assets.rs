//! The web console's front-end files in `web/dist/` (committed, embedded in the binary) are
//! exactly what `scripts/web-assets.sh` makes from `web/package-lock.json`: every file is the
//! byte-for-byte copy of the package file that `web/dist/SOURCES` names, with the sha256 it
//! records, from the version the lock file pins. `scripts/test.sh` installs `web/node_modules`
//! (`npm ci --prefix web`) before the tests run.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use aws_lc_rs::digest::{SHA256, digest};
use serde_json::Value;

use crate::fixture::repo;

/// The files the console embeds, which `SOURCES` must list.
const EMBEDDED: [&str; 3] = [
    "asciinema-player.min.js",
    "asciinema-player.css",
    "asciinema-player.LICENSE",
];

const REGENERATE: &str = "regenerate it with `bash scripts/web-assets.sh` and commit web/";

/// One line of `web/dist/SOURCES`: `file package version path-in-package sha256`.
#[derive(Debug)]
struct Source {
    file: String,
    package: String,
    version: String,
    path: String,
    sha256: String,
}

fn web() -> PathBuf {
    repo().join("web")
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&read(path))
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(digest(&SHA256, bytes))
}

fn sources() -> Vec<Source> {
    let path = web().join("dist/SOURCES");
    let text = String::from_utf8(read(&path)).expect("SOURCES is UTF-8");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match l.split(' ').collect::<Vec<_>>()[..] {
            [file, package, version, path, sha256] => Source {
                file: file.into(),
                package: package.into(),
                version: version.into(),
                path: path.into(),
                sha256: sha256.into(),
            },
            _ => panic!("web/dist/SOURCES: not `file package version path sha256`: {l:?}"),
        })
        .collect()
}

/// The version `web/package-lock.json` pins for `package`.
fn locked_version(package: &str) -> String {
    let lock = json(&web().join("package-lock.json"));
    lock["packages"][format!("node_modules/{package}")]["version"]
        .as_str()
        .unwrap_or_else(|| panic!("web/package-lock.json pins no {package}"))
        .to_owned()
}

/// `web/dist/` holds exactly the files `SOURCES` lists, each with the sha256 recorded there,
/// from the versions the lock file pins, and the player bundle is the one that defines the
/// `AsciinemaPlayer` global when loaded with a plain `<script src>`.
#[test]
fn web_dist_matches_its_sources_and_the_lock_file() {
    let sources = sources();
    let listed: BTreeSet<String> = sources.iter().map(|s| s.file.clone()).collect();
    for f in EMBEDDED {
        assert!(
            listed.contains(f),
            "web/dist/SOURCES does not list {f}; {REGENERATE}"
        );
    }
    let present: BTreeSet<String> = fs::read_dir(web().join("dist"))
        .expect("web/dist/ exists")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| f != "SOURCES")
        .collect();
    assert_eq!(
        present, listed,
        "web/dist/ holds other files than SOURCES lists; {REGENERATE}"
    );
    for s in &sources {
        let bytes = read(&web().join("dist").join(&s.file));
        assert_eq!(
            sha256(&bytes),
            s.sha256,
            "web/dist/{}: sha256 differs from SOURCES; {REGENERATE}",
            s.file
        );
        assert_eq!(
            s.version,
            locked_version(&s.package),
            "web/dist/{} is from {} {}, web/package-lock.json pins another version; {REGENERATE}",
            s.file,
            s.package,
            s.version
        );
    }
    let bundle = read(&web().join("dist/asciinema-player.min.js"));
    let bundle = String::from_utf8_lossy(&bundle);
    assert!(
        bundle.contains("var AsciinemaPlayer="),
        "the player bundle defines no AsciinemaPlayer global"
    );
    let license = read(&web().join("dist/asciinema-player.LICENSE"));
    assert!(
        String::from_utf8_lossy(&license).contains("Apache License"),
        "asciinema-player.LICENSE"
    );
}

/// Each file in `web/dist/` is byte for byte the package file `SOURCES` names, as `npm ci`
/// installs it from the lock file into `web/node_modules/`.
#[test]
fn web_dist_is_what_the_lock_file_installs() {
    let modules = web().join("node_modules");
    assert!(
        modules.join("asciinema-player").is_dir(),
        "{} is missing: run `npm ci --prefix web` (scripts/test.sh does) to install the packages \
         web/package-lock.json pins, against which web/dist/ is checked",
        modules.join("asciinema-player").display()
    );
    for s in sources() {
        let package = modules.join(&s.package);
        let installed = json(&package.join("package.json"))["version"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert_eq!(
            installed,
            locked_version(&s.package),
            "web/node_modules/{} is {installed}, not what web/package-lock.json pins: run `npm ci --prefix web`",
            s.package
        );
        assert_eq!(
            installed, s.version,
            "web/dist/SOURCES: {} is from {} {}; {REGENERATE}",
            s.file, s.package, s.version
        );
        let original = read(&package.join(&s.path));
        let copy = read(&web().join("dist").join(&s.file));
        assert!(
            copy == original,
            "web/dist/{} differs from web/node_modules/{}/{}; {REGENERATE}",
            s.file,
            s.package,
            s.path
        );
        assert_eq!(
            sha256(&original),
            s.sha256,
            "web/dist/SOURCES: sha256 of {}; {REGENERATE}",
            s.file
        );
    }
}
