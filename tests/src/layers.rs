//! No crate of the workspace has an import circle among its top-level
//! modules: a low module never names one that uses it. Checked on the
//! sources (every `crate::<module>` a module's code names, its tests
//! excluded), so that a new import that closes a circle fails the tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level module → the top-level modules its code names.
pub type Imports = BTreeMap<String, BTreeSet<String>>;

/// The imports between the top-level modules of the crate whose sources
/// are in `src`.
pub fn imports(src: &Path) -> Imports {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let module_of = |path: &Path| -> String {
        let relative = path.strip_prefix(src).expect("under src");
        let first = relative.components().next().expect("a component");
        let name = first.as_os_str().to_string_lossy();
        name.trim_end_matches(".rs").to_string()
    };
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(f)).collect();
    let mut imports = Imports::new();
    for file in &files {
        let module = module_of(file);
        if module == "lib" || module == "main" {
            continue;
        }
        let source = std::fs::read_to_string(file).unwrap_or_default();
        let code = source.split("#[cfg(test)]").next().unwrap_or_default();
        let named = imports.entry(module.clone()).or_default();
        for line in code.lines() {
            let line = line.split("//").next().unwrap_or_default();
            for name in names_after(line, "crate::") {
                if name != module && modules.contains(&name) {
                    named.insert(name);
                }
            }
        }
    }
    imports
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The identifiers that follow `prefix` in `line`.
fn names_after(line: &str, prefix: &str) -> Vec<String> {
    line.match_indices(prefix)
        .filter(|(at, _)| {
            // `$crate::` in a macro is the crate too; `foo_crate::` is not.
            let before = line[..*at].chars().next_back();
            !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
        })
        .map(|(at, _)| {
            line[at + prefix.len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

/// Each module that can reach itself through the imports, with the path.
pub fn circles(imports: &Imports) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for start in imports.keys() {
        if let Some(path) = path_back(imports, start) {
            found.push(path);
        }
    }
    found
}

/// A path of imports from `start` back to `start`, if there is one.
fn path_back(imports: &Imports, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![start.to_string()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().expect("never empty");
        for next in imports.get(last).into_iter().flatten() {
            if next == start {
                let mut circle = path.clone();
                circle.push(next.clone());
                return Some(circle);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push(longer);
            }
        }
    }
    None
}

/// The `src` folders of the workspace's crates.
pub fn workspace_sources() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository root")
        .to_path_buf();
    let mut found = Vec::new();
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if !path.is_dir() || name.starts_with('.') || name == "target" {
                continue;
            }
            if name == "src" && dir.join("Cargo.toml").exists() {
                found.push(path);
            } else {
                dirs.push(path);
            }
        }
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_circle_is_found_and_a_chain_is_not() {
        let mut imports = Imports::new();
        imports.insert("a".into(), ["b".to_string()].into());
        imports.insert("b".into(), ["c".to_string()].into());
        imports.insert("c".into(), BTreeSet::new());
        assert!(circles(&imports).is_empty());
        imports.insert("c".into(), ["a".to_string()].into());
        assert_eq!(circles(&imports)[0], ["a", "b", "c", "a"]);
    }

    #[test]
    fn names_follow_crate_and_dollar_crate_only() {
        assert_eq!(
            names_after(
                "use crate::bus::{x}; $crate::sync::E; my_crate::no",
                "crate::"
            ),
            ["bus", "sync"]
        );
    }

    #[test]
    fn no_crate_of_the_workspace_has_an_import_circle() {
        let sources = workspace_sources();
        assert!(sources.len() >= 8, "found {sources:?}");
        let mut failures = Vec::new();
        for src in sources {
            for circle in circles(&imports(&src)) {
                failures.push(format!("{}: {}", src.display(), circle.join(" → ")));
            }
        }
        assert!(
            failures.is_empty(),
            "import circles:\n{}",
            failures.join("\n")
        );
    }
}
