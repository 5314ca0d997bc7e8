// Records the git commit for `loraflow_build_info{git=…}`. `LORAFLOW_GIT_COMMIT` wins (a
// Docker build or a source tarball has no `.git`); without either the label is `unknown`.
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=LORAFLOW_GIT_COMMIT");
    let commit = std::env::var("LORAFLOW_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=LORAFLOW_GIT_COMMIT={commit}");
    // Rerun when HEAD moves: HEAD itself (branch switch), the branch it points at, and
    // packed-refs (a ref may live only there after `git gc`). Only existing files: cargo
    // reruns a build script on every build while a watched path is missing.
    let branch = git(&["symbolic-ref", "-q", "HEAD"]);
    let watched = [Some("HEAD"), branch.as_deref(), Some("packed-refs")];
    for path in watched.into_iter().flatten().filter_map(|r| git(&["rev-parse", "--git-path", r])) {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
