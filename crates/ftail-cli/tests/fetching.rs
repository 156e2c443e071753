//! Third-party sources and tools are fetched only through the ordinary
//! clients (`pip`, `npm`, `apt-get`) and their own configuration: no
//! script names a host or downloads by itself. (`corpus/fetch.sh` used to
//! read PyPI's index with curl.)

mod common;

use common::*;

#[test]
fn scripts_fetch_only_through_package_clients() {
    let scripts = [
        "corpus/fetch.sh",
        "corpus/build.sh",
        "scripts/install-deps",
        "scripts/test-all",
        ".ci/run",
    ];
    let mut checked = 0;
    for s in scripts
        .iter()
        .map(|s| repo().join(s))
        .chain(
            std::fs::read_dir(repo().join("bench"))
                .unwrap()
                .flatten()
                .map(|e| e.path()),
        )
        .filter(|p| p.extension().is_none_or(|e| e == "sh"))
    {
        let text = std::fs::read_to_string(&s).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split('#').next().unwrap_or("");
            for banned in ["curl ", "wget ", "http://", "https://"] {
                assert!(
                    !code.contains(banned),
                    "{}:{}: fetches by itself ({banned:?}): {line}",
                    s.display(),
                    n + 1
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} scripts looked at");
}
