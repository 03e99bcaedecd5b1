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
    /// the target directory and profile of the running executable: a test
    /// runs from `target/<profile>/deps`, the `chaos` binary from
    /// `target/<profile>`. `cargo test -p testkit` alone builds only this
    /// crate, so the test cannot rely on another crate's binaries being
    /// there.
    pub fn build() -> anyhow::Result<Binaries> {
        let exe = std::env::current_exe().context("locating the running executable")?;
        let mut dir = exe.parent().context("executable without a directory")?;
        if dir.ends_with("deps") {
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
        for (_, package) in BINARIES {
            command.args(["-p", package]);
        }
        if dir.file_name().is_some_and(|n| n == "release") {
            command.arg("--release");
        }
        // The target directory of the running executable, whatever
        // CARGO_TARGET_DIR says in this environment.
        if let Some(target) = dir.parent() {
            command.env("CARGO_TARGET_DIR", target);
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
