//! The arrows between the top-level modules of `src/` point one way: no module reaches,
//! through `crate::` paths, a module that reaches it back.
//!
//! `cargo test --test arrows` reads every `.rs` file under `src/` (no compiler, no network),
//! collects which top-level module names each top-level module uses, and fails on a cycle,
//! naming it and one line for each of its arrows.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// One arrow: where it is written (file:line) for the failure message.
type Arrows = BTreeMap<String, BTreeMap<String, String>>;

#[test]
fn no_cycle_between_top_level_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let arrows = arrows(&src);
    assert!(
        arrows.len() > 10,
        "too few modules found under {}: {arrows:?}",
        src.display()
    );
    let cycles = cycles(&arrows);
    assert!(
        cycles.is_empty(),
        "import cycles between top-level modules of src/:\n{}",
        cycles.join("\n")
    );
}

#[test]
fn the_reader_finds_use_groups_and_paths_and_skips_comments() {
    let text = "use crate::{chat::{A, B}, plan};\n\
                // crate::sink in a comment\n\
                /// [`crate::ops`] in a doc link\n\
                let x = crate::run::execute(); let s = \"$crate::run::budget\";\n\
                use crate::settings::Settings;\n";
    let found: BTreeSet<String> = used_modules(text).into_iter().map(|(m, _)| m).collect();
    let want: BTreeSet<String> = ["chat", "plan", "run", "settings"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(found, want);
}

#[test]
fn a_cycle_is_found_and_named() {
    let mut arrows = Arrows::new();
    for (from, to) in [
        ("run", "exit"),
        ("exit", "run"),
        ("cli", "exit"),
        ("plan", "text"),
    ] {
        arrows
            .entry(from.to_string())
            .or_default()
            .insert(to.to_string(), format!("src/{from}.rs:1"));
    }
    let cycles = cycles(&arrows);
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    assert!(
        cycles[0].starts_with("exit -> run -> exit"),
        "{}",
        cycles[0]
    );
}

/// Every top-level module (`src/x.rs` or `src/x/`) and the top-level modules it uses.
fn arrows(src: &Path) -> Arrows {
    let mut arrows = Arrows::new();
    for entry in fs::read_dir(src).expect("src/ readable") {
        let path = entry.expect("src/ entry").path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if name == "lib" || name == "main" {
            continue; // the module map and the binary: they use everything by design
        }
        let mut files = Vec::new();
        rust_files(&path, &mut files);
        let uses = arrows.entry(name.clone()).or_default();
        for file in files {
            let text = fs::read_to_string(&file).expect("source readable");
            for (module, line) in used_modules(&text) {
                if module != name {
                    let at = format!(
                        "{}:{line}",
                        file.strip_prefix(src.parent().unwrap())
                            .unwrap_or(&file)
                            .display()
                    );
                    uses.entry(module).or_insert(at);
                }
            }
        }
    }
    arrows
}

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in fs::read_dir(path).expect("directory readable") {
            rust_files(&entry.expect("entry").path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// The top-level module names a file's code reaches through `crate::` (not in comments),
/// each with the line it is first seen on.
fn used_modules(text: &str) -> Vec<(String, usize)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let macro_path = rest[..i].ends_with('$');
            let after = &rest[i + "crate::".len()..];
            rest = after;
            if macro_path {
                continue;
            }
            if let Some(group) = after.strip_prefix('{') {
                for name in group_heads(group) {
                    found.push((name, n + 1));
                }
            } else if let Some(name) = ident(after) {
                found.push((name, n + 1));
            }
        }
    }
    found
}

/// The first name of each top-level item of a `use crate::{...}` group (on one line).
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut start = true;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => start = true,
            c if start && !c.is_whitespace() => {
                start = false;
                heads.extend(ident(&group[i..]));
            }
            _ => {}
        }
    }
    heads
}

fn ident(s: &str) -> Option<String> {
    let name: String = s
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty() && name != "self").then_some(name)
}

/// Each strongly connected set of modules, written as one cycle through it with the line of
/// each arrow.
fn cycles(arrows: &Arrows) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for start in arrows.keys() {
        if seen.contains(start) {
            continue;
        }
        if let Some(path) = path_back(arrows, start) {
            let text: Vec<String> = path
                .windows(2)
                .map(|w| arrows[&w[0]][&w[1]].clone())
                .collect();
            out.push(format!("{} ({})", path.join(" -> "), text.join(", ")));
            seen.extend(path);
        }
    }
    out
}

/// The shortest path from `start` back to itself, if there is one (breadth first).
fn path_back(arrows: &Arrows, start: &str) -> Option<Vec<String>> {
    let mut came_from: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start.to_string()]);
    while let Some(at) = queue.pop_front() {
        for next in arrows.get(&at).into_iter().flat_map(|m| m.keys()) {
            if next == start {
                let mut cycle = vec![at.clone()];
                while let Some(prev) = came_from.get(cycle.last().unwrap()) {
                    cycle.push(prev.clone());
                }
                cycle.reverse(); // start, ..., at
                cycle.push(start.to_string());
                return Some(cycle);
            }
            if next != start && !came_from.contains_key(next) && arrows.contains_key(next) {
                came_from.insert(next.clone(), at.clone());
                queue.push_back(next.clone());
            }
        }
    }
    None
}

/// Functions fit on one screen: one over 60 lines says why in a comment just above it,
/// starting "(Over 60 lines:" (the test modules are not counted).
#[test]
fn long_functions_say_why() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut silent = Vec::new();
    for file in files {
        let text = fs::read_to_string(&file).expect("source readable");
        for (name, line, len, reason) in long_functions(&text, 60) {
            if !reason {
                let at = file.strip_prefix(src.parent().unwrap()).unwrap_or(&file);
                silent.push(format!("{}:{line} {name} ({len} lines)", at.display()));
            }
        }
    }
    assert!(
        silent.is_empty(),
        "functions over 60 lines without an \"(Over 60 lines: ...)\" comment above them:\n{}",
        silent.join("\n")
    );
}

#[test]
fn long_functions_are_measured_from_fn_to_its_closing_brace() {
    let body = "    let x = 1;\n".repeat(3);
    let text = format!(
        "/// (Over 60 lines: a table.)\nfn long() {{\n{body}}}\n\nfn short() {{\n}}\n\
         #[cfg(test)]\nmod tests {{\n    fn ignored() {{\n{body}    }}\n}}\n"
    );
    let found = long_functions(&text, 3);
    assert_eq!(found, vec![("long".to_string(), 2, 5, true)]);
}

/// Each function longer than `max` lines before the file's test module: its name, first
/// line, length, and whether a comment just above it gives the reason.
fn long_functions(text: &str, max: usize) -> Vec<(String, usize, usize, bool)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let rest = ["pub(crate) ", "pub(super) ", "pub "]
            .iter()
            .find_map(|p| trimmed.strip_prefix(p))
            .unwrap_or(trimmed);
        let rest = rest.strip_prefix("async ").unwrap_or(rest);
        let Some(name) = rest.strip_prefix("fn ").and_then(ident) else {
            continue;
        };
        let close = format!("{indent}}}");
        let Some(end) = (i + 1..lines.len()).find(|&j| lines[j] == close) else {
            continue;
        };
        let len = end - i + 1;
        if len > max {
            let above = lines[i.saturating_sub(8)..i].iter();
            let reason = above
                .filter(|l| l.trim_start().starts_with("//"))
                .any(|l| l.contains("(Over 60 lines:"));
            found.push((name, i + 1, len, reason));
        }
    }
    found
}
