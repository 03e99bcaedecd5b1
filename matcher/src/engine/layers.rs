//! The engine's modules import each other in one direction only (the
//! module doc of [`super`]): checked on their source, so that a new
//! import that closes a circle fails the tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The name `mod.rs` is known by here: it uses every module.
const ROOT: &str = "engine";

/// Each module of the engine and the engine modules its code (not its
/// tests) names: `super::m` (`super::super::m` from a file in the
/// module's folder) or `crate::engine::m`. An item of `mod.rs` named so
/// counts as the root.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/engine");
    let files = sources(&dir);
    let modules: BTreeSet<String> = files.iter().map(|(m, _, _)| m.clone()).collect();
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    imports.insert(ROOT.into(), modules.clone());
    for (module, path, depth) in files {
        let source = std::fs::read_to_string(&path).expect("readable source");
        // The tests come last; they may use anything.
        let code = source.split("#[cfg(test)]").next().unwrap_or_default();
        let named = imports.entry(module.clone()).or_default();
        let up = "super::".repeat(depth + 1);
        for line in code.lines() {
            let line = line.split("//").next().unwrap_or_default();
            for prefix in [up.as_str(), "crate::engine::"] {
                for name in names_after(line, prefix) {
                    if name == module {
                        continue;
                    }
                    if modules.contains(&name) {
                        named.insert(name);
                    } else {
                        named.insert(ROOT.into());
                    }
                }
            }
        }
    }
    imports
}

/// The `.rs` files of `dir` with their module (a folder's files belong to
/// the module of its name) and depth; `mod.rs` is the root.
fn sources(dir: &Path) -> Vec<(String, PathBuf, usize)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("the engine's folder") {
        let path = entry.expect("a directory entry").path();
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        if path.is_dir() {
            for (_, inner, depth) in sources(&path) {
                files.push((stem.clone(), inner, depth + 1));
            }
        } else if path.extension().is_some_and(|e| e == "rs") && stem != "mod" {
            files.push((stem, path, 0));
        }
    }
    files
}

/// The first name of each path after `prefix` in `line` (each of a
/// `{a, b::c}` group).
fn names_after(line: &str, prefix: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names = Vec::new();
    for (at, _) in line.match_indices(prefix) {
        let rest = &line[at + prefix.len()..];
        match rest.strip_prefix('{') {
            Some(group) => {
                let group = group.split('}').next().unwrap_or_default();
                names.extend(group.split(',').map(ident));
            }
            None => names.push(ident(rest)),
        }
    }
    names.retain(|n| !n.is_empty() && n != "super" && n != "self");
    names
}

/// A circle of imports, if there is one.
fn circle(imports: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        imports: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut circle = path[at..].to_vec();
            circle.push(m.into());
            return Some(circle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.into());
        for next in imports.get(m).into_iter().flatten() {
            if let Some(circle) = visit(next, imports, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(m.into());
        None
    }
    let mut done = BTreeSet::new();
    imports
        .keys()
        .find_map(|m| visit(m, imports, &mut Vec::new(), &mut done))
}

#[test]
fn the_engine_modules_import_each_other_in_one_direction() {
    let imports = imports();
    assert!(
        imports.len() > 10,
        "the engine's modules are found: {imports:?}"
    );
    assert!(imports["component"].contains("write"));
    if let Some(circle) = circle(&imports) {
        panic!("import circle: {}", circle.join(" → "));
    }
}

#[test]
fn a_circle_is_found() {
    let mut imports = BTreeMap::new();
    imports.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    imports.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    imports.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(circle(&imports).expect("a circle"), ["a", "b", "c", "a"]);
    imports.get_mut("c").unwrap().clear();
    assert_eq!(circle(&imports), None);
}

#[test]
fn grouped_and_nested_paths_are_read() {
    assert_eq!(
        names_after("use super::{index::Undo, par};", "super::"),
        ["index", "par"]
    );
    assert_eq!(
        names_after("use super::super::rows::load_rows;", "super::super::"),
        ["rows"]
    );
    assert_eq!(
        names_after("x(crate::engine::write::pairs)", "crate::engine::"),
        ["write"]
    );
}
