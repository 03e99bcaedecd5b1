//! The commands the documents show must exist: every code-block line of the
//! repository's Markdown files that starts with a binary's name is read as
//! a command line of that binary, and each of its subcommands and flags is
//! looked up in the binary's own `--help`. A test of each binary's crate
//! runs [`check_documented_commands`], so a renamed flag or subcommand fails
//! the test command instead of misleading an operator.
//!
//! How a line is read (the forms the documents use):
//! * a `#` after a space starts a comment;
//! * ` | ` and ` / ` separate alternatives: one starting with a word
//!   replaces the last subcommand (`etl brake list | release SOURCE`), one
//!   starting with a flag or `[` continues the same command
//!   (`etl replay --from-seq N | --from-time T`);
//! * `a|b|c` inside a word lists subcommands (`etl dlq list|show`);
//! * a word is a subcommand if the parent's help lists it under
//!   `Commands:`; the first word that is not ends the chain (a value), and
//!   is a mistake if it looks like a subcommand where one is expected.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One documented command line and where it was found.
#[derive(Debug, Clone)]
pub struct DocumentedLine {
    pub file: PathBuf,
    pub line: usize,
    pub text: String,
}

/// The repository's root (the parent of this crate's folder).
fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository root")
        .to_path_buf()
}

fn markdown_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if !name.starts_with('.') && name != "target" && name != "node_modules" {
                markdown_files(&path, found);
            }
        } else if name.ends_with(".md") {
            found.push(path);
        }
    }
}

/// Code-block lines (indented by four spaces or inside a fence) of every
/// Markdown file that start with `binary` followed by a space or the end.
pub fn documented_lines(binary: &str) -> Vec<DocumentedLine> {
    let mut files = Vec::new();
    markdown_files(&repository_root(), &mut files);
    files.sort();
    let mut lines = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let mut fenced = false;
        for (n, raw) in text.lines().enumerate() {
            if raw.trim_start().starts_with("```") {
                fenced = !fenced;
                continue;
            }
            if !fenced && !raw.starts_with("    ") {
                continue;
            }
            let line = raw.trim();
            if line == binary || line.starts_with(&format!("{binary} ")) {
                lines.push(DocumentedLine {
                    file: file.clone(),
                    line: n + 1,
                    text: line.to_string(),
                });
            }
        }
    }
    lines
}

/// `binary chain… --help`, or `None` if it fails.
fn help(binary: &Path, chain: &[String]) -> Option<String> {
    let output = Command::new(binary)
        .args(chain)
        .arg("--help")
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The subcommands a help text lists under `Commands:`.
fn subcommands(help: &str) -> BTreeSet<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// The alternatives of one documented line, each as its words after the
/// binary's name.
fn alternatives(binary: &str, text: &str) -> Vec<Vec<String>> {
    let text = text.split(" #").next().unwrap_or_default();
    let text = text.strip_prefix(binary).unwrap_or(text);
    let mut result: Vec<Vec<String>> = Vec::new();
    for part in text.split(" | ").flat_map(|p| p.split(" / ")) {
        let words: Vec<String> = part.split_whitespace().map(str::to_string).collect();
        let Some(first) = words.first() else { continue };
        let mut command = match result.last() {
            // `etl persons lock 123 / etl persons unlock 123`
            _ if first == binary => words[1..].to_vec(),
            None => words,
            Some(previous) if first.starts_with('-') || first.starts_with('[') => {
                previous.iter().cloned().chain(words).collect()
            }
            Some(previous) => {
                let chain = previous
                    .iter()
                    .take_while(|w| looks_like_subcommand(w))
                    .count();
                let mut command: Vec<String> = previous[..chain.saturating_sub(1)].to_vec();
                command.extend(words);
                command
            }
        };
        command.retain(|w| !w.is_empty());
        result.push(command);
    }
    result
}

/// `show`, `generate-truth`, `list|show`: not a value (`123`, `NAME`,
/// `qms:41449`) nor a flag.
fn looks_like_subcommand(word: &str) -> bool {
    word.starts_with(|c: char| c.is_ascii_lowercase())
        && word
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '|')
}

/// What is wrong with one alternative (words after the binary), if anything.
fn problems(binary: &Path, words: &[String]) -> Vec<String> {
    let mut chain: Vec<String> = Vec::new();
    let Some(mut helps) = help(binary, &chain).map(|h| vec![h]) else {
        return vec!["`--help` fails".into()];
    };
    let mut problems = Vec::new();
    for word in words
        .iter()
        .take_while(|w| !w.starts_with('-') && !w.starts_with('['))
    {
        let known = subcommands(helps.last().expect("a help"));
        let variants: Vec<&str> = word.split('|').collect();
        if !variants.iter().all(|v| known.contains(*v)) {
            // A command with subcommands takes one: a word that looks like
            // one but is not listed is a mistake, not a value.
            if !known.is_empty() && looks_like_subcommand(word) {
                let chain = chain.join(" ");
                problems.push(format!("`{chain}` has no subcommand {word}"));
            }
            break;
        }
        for variant in &variants[1..] {
            let mut other = chain.clone();
            other.push(variant.to_string());
            if help(binary, &other).is_none() {
                problems.push(format!("subcommand `{}` has no help", other.join(" ")));
            }
        }
        chain.push(variants[0].to_string());
        match help(binary, &chain) {
            Some(h) => helps.push(h),
            None => {
                problems.push(format!("subcommand `{}` has no help", chain.join(" ")));
                return problems;
            }
        }
    }
    for flag in words.iter().flat_map(|w| flags(w)) {
        if !helps.iter().any(|h| mentions_flag(h, &flag)) {
            problems.push(format!("`{}` has no flag {flag}", chain.join(" ")));
        }
    }
    problems
}

/// The `--long` flags in a word (`[--set`, `--sets=febrl1`, `[--keep]`).
fn flags(word: &str) -> Vec<String> {
    let word = word.trim_start_matches('[');
    if !word.starts_with("--") {
        return Vec::new();
    }
    let name: String = word[2..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    if name.is_empty() {
        Vec::new()
    } else {
        vec![format!("--{name}")]
    }
}

fn mentions_flag(help: &str, flag: &str) -> bool {
    help.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .any(|token| token == flag)
}

/// Fails (naming file, line and problem) if any documented command line of
/// `binary` (its name in the documents; `path` the built executable) uses a
/// subcommand or flag the binary does not have. Returns how many lines
/// were checked.
pub fn check_documented_commands(binary: &str, path: &str) -> usize {
    let lines = documented_lines(binary);
    let mut failures = Vec::new();
    for line in &lines {
        for words in alternatives(binary, &line.text) {
            for problem in problems(Path::new(path), &words) {
                failures.push(format!(
                    "{}:{}: {problem}\n    {}",
                    line.file.display(),
                    line.line,
                    line.text
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "documented commands that do not exist:\n{}",
        failures.join("\n")
    );
    lines.len()
}

/// Lines of the repository's Markdown files that tell the project's history
/// instead of the product (work stops, rounds, issue numbers): documents
/// describe the product as it is; git holds the history.
pub fn history_lines() -> Vec<DocumentedLine> {
    let mut files = Vec::new();
    markdown_files(&repository_root(), &mut files);
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            if tells_history(line) {
                found.push(DocumentedLine {
                    file: file.clone(),
                    line: n + 1,
                    text: line.trim().to_string(),
                });
            }
        }
    }
    found
}

/// `stop 18`, `issue 20`, `round before`, `rounds before`, `latest round`.
fn tells_history(line: &str) -> bool {
    let words: Vec<String> = line
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    words.windows(2).any(|pair| {
        let numbered = pair[1].chars().all(|c| c.is_ascii_digit());
        ((pair[0] == "stop" || pair[0] == "issue") && numbered)
            || ((pair[0] == "round" || pair[0] == "rounds") && pair[1] == "before")
            || (pair[0] == "latest" && pair[1] == "round")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn alternatives_replace_the_last_subcommand_or_continue_the_command() {
        assert_eq!(
            alternatives("etl", "etl brake list | release SOURCE [DATABASE]   # note"),
            vec![
                words(&["brake", "list"]),
                words(&["brake", "release", "SOURCE", "[DATABASE]"])
            ]
        );
        assert_eq!(
            alternatives("etl", "etl replay --from-seq N | --from-time T"),
            vec![
                words(&["replay", "--from-seq", "N"]),
                words(&["replay", "--from-seq", "N", "--from-time", "T"])
            ]
        );
        assert_eq!(
            alternatives("etl", "etl persons lock 123 / etl persons unlock 123"),
            vec![
                words(&["persons", "lock", "123"]),
                words(&["persons", "unlock", "123"])
            ]
        );
    }

    #[test]
    fn a_value_ends_the_chain_an_alternative_replaces() {
        assert_eq!(
            alternatives(
                "etl",
                "etl generate-truth [--set febrl1] | evaluate --truth t.csv"
            ),
            vec![
                words(&["generate-truth", "[--set", "febrl1]"]),
                words(&["evaluate", "--truth", "t.csv"])
            ]
        );
        assert_eq!(
            alternatives("etl", "etl persons link A B --note x / keep-apart A B"),
            vec![
                words(&["persons", "link", "A", "B", "--note", "x"]),
                words(&["persons", "keep-apart", "A", "B"])
            ]
        );
    }

    #[test]
    fn history_is_recognized() {
        assert!(tells_history("Measured in stop 18."));
        assert!(tells_history("see Issue 20 for"));
        assert!(tells_history("Three rounds before, the figure"));
        assert!(tells_history("the latest round"));
        assert!(!tells_history("stop the loader; issue a command"));
    }

    #[test]
    fn the_documents_tell_no_history() {
        let found: Vec<String> = history_lines()
            .iter()
            .map(|l| format!("{}:{}: {}", l.file.display(), l.line, l.text))
            .collect();
        assert!(
            found.is_empty(),
            "history in the documents:\n{}",
            found.join("\n")
        );
    }

    #[test]
    fn flags_are_read_from_brackets_and_values() {
        assert_eq!(flags("[--set"), vec!["--set"]);
        assert_eq!(flags("--sets=febrl1"), vec!["--sets"]);
        assert_eq!(flags("[--keep]"), vec!["--keep"]);
        assert!(flags("N").is_empty());
    }

    #[test]
    fn subcommands_are_read_from_the_commands_section() {
        let help = "About\n\nCommands:\n  show  Show it\n  list\n\nOptions:\n  -h, --help\n";
        assert_eq!(subcommands(help), ["list", "show"].map(String::from).into());
    }
}
