//! The product's binaries the harness runs: built by cargo next to the
//! harness (the same profile and target directory), or taken from a
//! directory of installed ones.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// Every binary the harness starts, with the package that builds it.
const BINARIES: &[(&str, &str)] = &[
    ("loader", "loader"),
    ("matcher", "matcher"),
    ("qms-extractor", "qms-extractor"),
    ("qms-sim", "qms-sim"),
    ("infoclinica-extractor", "infoclinica-extractor"),
    ("etl", "etl"),
];

/// Where the binaries are.
#[derive(Debug, Clone)]
pub struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// The binaries in `dir` (e.g. `/usr/local/bin`), checked to exist.
    pub fn installed(dir: &Path) -> anyhow::Result<Binaries> {
        let found = Binaries {
            dir: dir.to_path_buf(),
        };
        found.check()?;
        Ok(found)
    }

    /// Builds the binaries with cargo (a no-op when they are up to date) in
    /// the target directory and profile of the running executable. A test
    /// runs from `target/<profile>/deps`: there the whole workspace's bins
    /// and tests are built, which resolves features exactly as `cargo test
    /// --workspace` does (a no-op inside it; `cargo build -p …` alone
    /// resolves some dependencies' features differently and would rebuild
    /// them). The `chaos` binary runs from `target/<profile>` and builds
    /// just the binaries it starts.
    pub fn build() -> anyhow::Result<Binaries> {
        let exe = std::env::current_exe().context("locating the running executable")?;
        let mut dir = exe.parent().context("executable without a directory")?;
        let in_test = dir.ends_with("deps");
        if in_test {
            dir = dir.parent().context("deps without a parent")?;
        }
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("testkit outside the workspace")?;
        let cargo = std::env::var("CARGO")
            .ok()
            .or_else(|| option_env!("CARGO").map(str::to_string))
            .unwrap_or_else(|| "cargo".into());
        let mut command = Command::new(cargo);
        command
            .arg("build")
            .arg("--manifest-path")
            .arg(workspace.join("Cargo.toml"))
            .arg("--bins");
        if in_test {
            command.args(["--workspace", "--tests"]);
        } else {
            for (_, package) in BINARIES {
                command.args(["-p", package]);
            }
        }
        if dir.file_name().is_some_and(|n| n == "release") {
            command.arg("--release");
        }
        // The target directory of the running executable, whatever
        // CARGO_TARGET_DIR says in this environment.
        if let Some(target) = dir.parent() {
            command.env("CARGO_TARGET_DIR", target);
        }
        // What cargo set for this process (`cargo test`, `cargo run`): build
        // scripts (ring's, through cc) rerun when such a variable differs
        // from the outer build's environment, and with them everything
        // above them — a rebuild here and another in the next outer build.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            let set_by_cargo = ["CARGO_MANIFEST_", "CARGO_PKG_", "CARGO_BIN_"]
                .iter()
                .any(|p| key.starts_with(p))
                || [
                    "CARGO",
                    "CARGO_CRATE_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "CARGO_RUSTC_CURRENT_DIR",
                    "OUT_DIR",
                ]
                .contains(&key.as_ref());
            if set_by_cargo {
                command.env_remove(key.as_ref());
            }
        }
        let status = command.status().context("running cargo build")?;
        if !status.success() {
            bail!("cargo build of the binaries failed: {status}");
        }
        let built = Binaries {
            dir: dir.to_path_buf(),
        };
        built.check()?;
        Ok(built)
    }

    /// The same binaries fixed in `dir` (hard links, or copies across file
    /// systems): a rebuild during the run (cargo replaces the files) must
    /// not start a newer version halfway through.
    pub fn snapshot(&self, dir: &Path) -> anyhow::Result<Binaries> {
        std::fs::create_dir_all(dir)?;
        for (name, _) in BINARIES {
            let (from, to) = (self.path(name), dir.join(name));
            if std::fs::hard_link(&from, &to).is_err() {
                std::fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
            }
        }
        Ok(Binaries {
            dir: dir.to_path_buf(),
        })
    }

    fn check(&self) -> anyhow::Result<()> {
        for (name, _) in BINARIES {
            let path = self.path(name);
            if !path.is_file() {
                bail!("binary {} not found", path.display());
            }
        }
        Ok(())
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}
