//! The crate's layers read one way: no import circle between the files of `src/`, nor between
//! its top-level modules (docs/architecture.md, "Who may import whom").
//!
//! Read from the code's own paths, as text: every `use` and every inline path that starts with
//! `crate::`, `super::`, `self::` or a module the file declares, resolved to the file that
//! defines the item (following a folder's `pub use` re-exports to the child that defines it).
//! A folder's `mod.rs` re-exporting its children is not a dependency of its own. Test modules
//! (from the first `#[cfg(test)]` on) and `main.rs` (the binary) are left out.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// One source file of the library: its module path and what it declares.
struct SourceFile {
    module: Vec<String>,
    code: String,
    children: BTreeSet<String>,
    /// `pub use child::…::Name` (or `as Name`): Name → the path it names, from this module.
    reexports: HashMap<String, Vec<String>>,
}

struct Crate {
    files: BTreeMap<Vec<String>, SourceFile>,
}

fn main_source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The code before the tests, without comments.
fn code_of(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    let mut code = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("/*") {
        code.push_str(&rest[..start]);
        rest = rest[start..]
            .find("*/")
            .map_or("", |end| &rest[start + end + 2..]);
    }
    code.push_str(rest);
    code.lines()
        .map(|line| line.find("//").map_or(line, |at| &line[..at]))
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Parses a path or use tree starting at `at` (just after a leading segment already in
/// `prefix`), pushing every full path it names. Returns where it stopped.
fn parse_tree(
    text: &[char],
    mut at: usize,
    prefix: Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> usize {
    let mut path = prefix;
    loop {
        while at < text.len() && text[at].is_whitespace() {
            at += 1;
        }
        if at + 1 < text.len() && text[at] == ':' && text[at + 1] == ':' {
            at += 2;
            while at < text.len() && text[at].is_whitespace() {
                at += 1;
            }
            if at < text.len() && text[at] == '{' {
                at += 1;
                loop {
                    while at < text.len() && (text[at].is_whitespace() || text[at] == ',') {
                        at += 1;
                    }
                    if at >= text.len() || text[at] == '}' {
                        return at + 1;
                    }
                    let start = at;
                    while at < text.len() && is_ident(text[at]) {
                        at += 1;
                    }
                    if start == at {
                        // `*` or something this reader doesn't follow: the group's module.
                        out.push(path.clone());
                        at += 1;
                        continue;
                    }
                    let segment: String = text[start..at].iter().collect();
                    let mut inner = path.clone();
                    if segment != "self" {
                        inner.push(segment);
                    }
                    at = parse_tree(text, at, inner, out);
                }
            }
            let start = at;
            while at < text.len() && is_ident(text[at]) {
                at += 1;
            }
            if start == at {
                out.push(path);
                return at;
            }
            path.push(text[start..at].iter().collect());
        } else {
            out.push(path);
            return at;
        }
    }
}

/// Every path in `code` whose first segment is one of `roots`, with the statement it is in
/// (so re-exports can be told apart).
fn paths_in(code: &str, roots: &BTreeSet<String>) -> Vec<(Vec<String>, bool)> {
    let text: Vec<char> = code.chars().collect();
    let inline = inline_modules(&text);
    let mut found = Vec::new();
    let mut at = 0;
    while at < text.len() {
        if !is_ident(text[at]) || (at > 0 && (is_ident(text[at - 1]) || text[at - 1] == ':')) {
            at += 1;
            continue;
        }
        let start = at;
        while at < text.len() && is_ident(text[at]) {
            at += 1;
        }
        let word: String = text[start..at].iter().collect();
        if !roots.contains(&word) || !text[at..].starts_with(&[':', ':']) {
            continue;
        }
        let statement_start = text[..start]
            .iter()
            .rposition(|&c| c == ';' || c == '}' || c == '{')
            .map_or(0, |p| p + 1);
        let statement: String = text[statement_start..start].iter().collect();
        let reexport = is_pub_use(&statement);
        // Inside an inline `mod name { … }`, `super` is this file.
        let word = if word == "super" && inline.iter().any(|r| r.contains(&start)) {
            "self".to_owned()
        } else {
            word
        };
        let mut paths = Vec::new();
        at = parse_tree(&text, at, vec![word], &mut paths);
        found.extend(paths.into_iter().map(|path| (path, reexport)));
    }
    found
}

impl Crate {
    fn read(src: &Path) -> Crate {
        let mut files = BTreeMap::new();
        let mut stack = vec![src.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("read src/") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs") {
                    continue;
                }
                let relative = path.strip_prefix(src).expect("under src/");
                let mut module: Vec<String> = relative
                    .with_extension("")
                    .iter()
                    .map(|part| part.to_string_lossy().into_owned())
                    .collect();
                if module
                    .last()
                    .is_some_and(|last| last == "mod" || last == "lib")
                {
                    module.pop();
                }
                if module == ["main"] {
                    continue;
                }
                let code = code_of(&std::fs::read_to_string(&path).expect("read source"));
                files.insert(
                    module.clone(),
                    SourceFile {
                        module,
                        children: declared_modules(&code),
                        code,
                        reexports: HashMap::new(),
                    },
                );
            }
        }
        let mut krate = Crate { files };
        let modules: Vec<_> = krate.files.keys().cloned().collect();
        for module in modules {
            let file = &krate.files[&module];
            let mut reexports = HashMap::new();
            for statement in file.code.split(';') {
                let trimmed = statement.trim_start();
                if !is_pub_use(trimmed) {
                    continue;
                }
                let body = trimmed
                    .split_once("use ")
                    .map_or("", |(_, body)| body)
                    .trim();
                let text: Vec<char> = body.chars().collect();
                let end = text
                    .iter()
                    .position(|&c| !is_ident(c))
                    .unwrap_or(text.len());
                let first: String = text[..end].iter().collect();
                let mut paths = Vec::new();
                parse_tree(&text, end, vec![first], &mut paths);
                for path in paths {
                    if let Some(name) = path.last() {
                        reexports.insert(name.clone(), path.clone());
                    }
                }
            }
            krate.files.get_mut(&module).expect("module").reexports = reexports;
        }
        krate
    }

    /// The file that defines what `path` (absolute, from the crate root) names.
    fn resolve(&self, path: &[String], depth: usize) -> Option<Vec<String>> {
        let mut module: Vec<String> = Vec::new();
        let mut rest = path;
        while let Some((first, tail)) = rest.split_first() {
            let file = self.files.get(&module)?;
            if file.children.contains(first) {
                module.push(first.clone());
                rest = tail;
                continue;
            }
            if depth < 8 {
                if let Some(reexported) = file.reexports.get(first) {
                    if let Some(absolute) = self.absolute(&module, reexported) {
                        if absolute != path {
                            return self.resolve(&absolute, depth + 1);
                        }
                    }
                }
            }
            break;
        }
        Some(module)
    }

    /// A path as written in `module` (`crate::`, `super::`, `self::` or a child's name), from
    /// the crate root; None for a path into another crate.
    fn absolute(&self, module: &[String], path: &[String]) -> Option<Vec<String>> {
        let (first, rest) = path.split_first()?;
        let mut base: Vec<String> = match first.as_str() {
            "crate" => Vec::new(),
            "self" => module.to_vec(),
            "super" => module[..module.len().checked_sub(1)?].to_vec(),
            child if self.files.get(module)?.children.contains(child) => {
                let mut base = module.to_vec();
                base.push(child.to_owned());
                return Some(base.into_iter().chain(rest.iter().cloned()).collect());
            }
            _ => return None,
        };
        let mut rest = rest;
        while rest.first().is_some_and(|segment| segment == "super") {
            base.pop();
            rest = &rest[1..];
        }
        Some(base.into_iter().chain(rest.iter().cloned()).collect())
    }

    /// File → the files it imports.
    fn file_edges(&self) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
        let mut edges = BTreeMap::new();
        for (module, file) in &self.files {
            let mut roots: BTreeSet<String> = ["crate", "super", "self"]
                .into_iter()
                .map(str::to_owned)
                .collect();
            roots.extend(file.children.iter().cloned());
            let targets: &mut BTreeSet<Vec<String>> = edges.entry(module.clone()).or_default();
            for (path, reexport) in paths_in(&file.code, &roots) {
                let own_child = path
                    .first()
                    .is_some_and(|first| file.children.contains(first) || first == "self");
                if reexport && own_child {
                    continue; // a folder re-exporting its children depends on nothing
                }
                let Some(absolute) = self.absolute(&file.module, &path) else {
                    continue;
                };
                if let Some(target) = self.resolve(&absolute, 0) {
                    if &target != module && !target.is_empty() {
                        targets.insert(target);
                    }
                }
            }
        }
        edges
    }
}

/// The bodies of inline modules (`mod name { … }`), as character ranges.
fn inline_modules(text: &[char]) -> Vec<std::ops::Range<usize>> {
    let code: String = text.iter().collect();
    let mut ranges = Vec::new();
    let mut searched = 0;
    while let Some(found) = code[searched..].find("mod ") {
        let start = searched + found;
        searched = start + 4;
        let after: String = code[searched..].chars().take(64).collect();
        let name_end = after.find(|c: char| !is_ident(c)).unwrap_or(after.len());
        if name_end == 0 || !after[name_end..].trim_start().starts_with('{') {
            continue;
        }
        let open = searched + name_end + after[name_end..].find('{').unwrap_or(0);
        let mut depth = 0usize;
        let mut end = code.len();
        for (offset, c) in code[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + offset;
                        break;
                    }
                }
                _ => {}
            }
        }
        let to_chars = |byte: usize| code[..byte].chars().count();
        ranges.push(to_chars(open)..to_chars(end));
    }
    ranges
}

/// `pub use `, `pub(crate) use `, …: the start of a re-export.
fn is_pub_use(statement: &str) -> bool {
    let Some(rest) = statement.trim_start().strip_prefix("pub") else {
        return false;
    };
    let rest = match rest.strip_prefix('(') {
        Some(inside) => inside.split_once(')').map_or("", |(_, after)| after),
        None => rest,
    };
    rest.trim_start().starts_with("use ")
}

fn declared_modules(code: &str) -> BTreeSet<String> {
    code.split(';')
        .filter_map(|statement| {
            let statement = statement.trim();
            let rest = statement
                .strip_prefix("pub mod ")
                .or_else(|| statement.strip_prefix("pub(crate) mod "))
                .or_else(|| statement.strip_prefix("mod "))?;
            let name = rest.trim();
            name.chars().all(is_ident).then(|| name.to_owned())
        })
        .collect()
}

/// The circles of a directed graph (strongly connected components of two or more nodes).
fn circles<N: Ord + Clone>(edges: &BTreeMap<N, BTreeSet<N>>) -> Vec<Vec<N>> {
    let nodes: Vec<N> = edges
        .keys()
        .cloned()
        .chain(edges.values().flatten().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let index: BTreeMap<&N, usize> = nodes.iter().enumerate().map(|(i, n)| (n, i)).collect();
    // Reachability by repeated search: small graphs, clarity over speed.
    let reach = |from: usize| {
        let mut seen = vec![false; nodes.len()];
        let mut stack = vec![from];
        while let Some(node) = stack.pop() {
            for next in edges.get(&nodes[node]).into_iter().flatten() {
                let next = index[next];
                if !seen[next] {
                    seen[next] = true;
                    stack.push(next);
                }
            }
        }
        seen
    };
    let reachable: Vec<Vec<bool>> = (0..nodes.len()).map(reach).collect();
    let mut placed = vec![false; nodes.len()];
    let mut found = Vec::new();
    for a in 0..nodes.len() {
        if placed[a] || !reachable[a][a] {
            continue;
        }
        let circle: Vec<N> = (0..nodes.len())
            .filter(|&b| reachable[a][b] && reachable[b][a])
            .inspect(|&b| placed[b] = true)
            .map(|b| nodes[b].clone())
            .collect();
        if circle.len() > 1 {
            found.push(circle);
        }
    }
    found
}

fn shown(module: &[String]) -> String {
    format!("crate::{}", module.join("::"))
}

/// Each circle as the arrows inside it, `a → b`.
fn described<N: Ord + Clone>(
    edges: &BTreeMap<N, BTreeSet<N>>,
    name: impl Fn(&N) -> String,
) -> Vec<String> {
    circles(edges)
        .iter()
        .map(|circle| {
            let members: BTreeSet<&N> = circle.iter().collect();
            circle
                .iter()
                .flat_map(|from| {
                    let name = &name;
                    edges
                        .get(from)
                        .into_iter()
                        .flatten()
                        .filter(|to| members.contains(to))
                        .map(move |to| format!("{} → {}", name(from), name(to)))
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect()
}

#[test]
fn no_import_circle_between_files() {
    let krate = Crate::read(&main_source_dir());
    let found = described(&krate.file_edges(), |module| shown(module));
    assert!(
        found.is_empty(),
        "import circles between files:\n{}",
        found.join("\n\n")
    );
}

#[test]
fn no_import_circle_between_top_level_modules() {
    let krate = Crate::read(&main_source_dir());
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, targets) in krate.file_edges() {
        let Some(top) = from.first() else { continue };
        for target in targets {
            if let Some(target_top) = target.first() {
                if target_top != top {
                    edges
                        .entry(top.clone())
                        .or_default()
                        .insert(target_top.clone());
                }
            }
        }
    }
    let found = described(&edges, String::clone);
    assert!(
        found.is_empty(),
        "import circles between top-level modules:\n{}",
        found.join("\n\n")
    );
}

/// The reader itself: a circle it is shown is a circle it reports, and a folder re-exporting
/// its children is not one.
#[test]
fn the_reader_finds_a_circle_and_follows_reexports() {
    let dir = std::env::temp_dir().join(format!("layers-{}", std::process::id()));
    let write = |path: &str, text: &str| {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    };
    write("lib.rs", "pub mod low;\npub mod high;\npub mod folder;\n");
    write("low.rs", "use crate::folder::Thing;\npub struct Low;\n");
    write("high.rs", "use crate::low::Low;\n");
    write(
        "folder/mod.rs",
        "mod a;\nmod b;\npub use a::Thing;\npub use b::Other;\n",
    );
    write("folder/a.rs", "pub struct Thing;\n");
    write("folder/b.rs", "use super::Thing;\npub struct Other;\n");
    let krate = Crate::read(&dir);
    let edges = krate.file_edges();
    let folder_a = vec!["folder".to_owned(), "a".to_owned()];
    assert!(edges[&vec!["low".to_owned()]].contains(&folder_a));
    assert!(edges[&vec!["folder".to_owned(), "b".to_owned()]].contains(&folder_a));
    assert!(edges[&vec!["folder".to_owned()]].is_empty());
    assert!(circles(&edges).is_empty());

    write(
        "folder/a.rs",
        "use crate::high::Nothing;\npub struct Thing;\n",
    );
    let krate = Crate::read(&dir);
    let found = circles(&krate.file_edges());
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].len(), 3);
}
