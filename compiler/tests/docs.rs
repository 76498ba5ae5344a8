//! The docs stay true: the spec reference in the repository carries the shared spec
//! word for word, documents every spec key the front end accepts beyond it, and the
//! README points at it (a user's clone has no `../shared`).

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn the_spec_reference_is_in_the_repository_and_in_step_with_the_shared_one() {
    let doc = read(&repo().join("docs/pipeline-spec.md"));
    // The shared spec, where this checkout has it beside it (the project's own
    // checkouts do; `STREAMC_SHARED_SPEC` names another copy).
    let shared = std::env::var_os("STREAMC_SHARED_SPEC")
        .map(PathBuf::from)
        .or_else(|| {
            [repo().join("../shared"), repo().join("../../shared")]
                .into_iter()
                .map(|d| d.join("docs/pipeline-spec.md"))
                .find(|p| p.exists())
        });
    match shared {
        Some(p) => {
            let text = read(&p);
            // Everything after its title, word for word.
            let body = text.split_once('\n').map_or("", |(_, b)| b).trim();
            assert!(
                doc.contains(body),
                "docs/pipeline-spec.md no longer carries {} word for word: copy it over again",
                p.display()
            );
        }
        None => eprintln!("no shared spec beside this checkout: only the additions are checked"),
    }
    // The forms this repository adds are documented.
    for form in [
        "max_ahead",
        "count",
        "late_delay",
        "key_fields",
        "stream_max_len",
        "serve:",
        "raw_base64",
        "key_base64",
        "headers",
        "truncated",
        "raw_size",
        "tombstone",
        "64 levels",
        "128 levels",
        "--input SOURCE=-",
        "streamc_source_ahead_of_clock_total",
    ] {
        assert!(
            doc.contains(form),
            "docs/pipeline-spec.md does not mention `{form}`"
        );
    }
    let readme = read(&repo().join("README.md"));
    assert!(readme.contains("docs/pipeline-spec.md"));
    assert!(
        !readme.contains("../shared"),
        "the README points outside the repository"
    );
}
