//! The module map holds: no module of `src/` imports from a higher layer, no circle ties
//! modules of one layer together, and each module imports only what its row says it may. The
//! map is declared once, as the "Module map" table of docs/HACKING.md (module, layer, what it
//! owns, what it may import); this test reads it and every production line of `src/` (test
//! modules and test-only files left out), and names each import that breaks it: file, module,
//! the module it reaches, both layers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One row of the map.
struct Row {
    layer: u32,
    name: String,
    /// The modules of "may import" (backticked names; `—` for none).
    may: BTreeSet<String>,
}

/// module -> its row, from the table under `## Module map`.
fn read_map(doc: &str) -> Result<BTreeMap<String, Row>, String> {
    let section = doc.split("\n## Module map").nth(1).ok_or("no \"## Module map\" section")?;
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut map = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let module = cells[1].trim_matches('`').to_string();
        let layer = cells.get(2).ok_or(format!("no layer in {line:?}"))?;
        let (n, name) = layer.split_once(' ').ok_or(format!("layer {layer:?}: want \"N name\""))?;
        let n: u32 = n.parse().map_err(|_| format!("layer {layer:?}: want \"N name\""))?;
        let may = cells.get(4).ok_or(format!("no \"may import\" in {line:?}"))?;
        let may = may.split('`').skip(1).step_by(2).map(str::to_string).collect();
        if map.insert(module.clone(), Row { layer: n, name: name.to_string(), may }).is_some() {
            return Err(format!("{module} is listed twice"));
        }
    }
    Ok(map)
}

/// The top-level modules of `crate::…` paths in `code` (`crate::a::b`, `crate::{a, b::c}`).
fn imported(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| s.trim().split("::").next().unwrap_or("").trim().to_string();
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `flower_init_crate::` and the like
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            out.extend(group[..end].split(',').map(ident).filter(|m| !m.is_empty() && m != "self"));
        } else {
            let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
            out.insert(rest[..end].to_string());
        }
    }
    out
}

/// The production code of a source file: comment lines dropped, and everything from a
/// `#[cfg(test)]` inline test module on (test modules stand at the bottom, HACKING.md).
fn production(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") && lines.get(i + 1).is_some_and(|n| n.trim_start().starts_with("mod ") && n.trim_end().ends_with('{')) {
            break;
        }
        if !t.starts_with("//") {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Files declared `#[cfg(test)] mod name;` (tests.rs, fixtures): not production code.
fn test_only_files(files: &BTreeMap<PathBuf, String>) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for (path, text) in files {
        let dir = match path.file_stem().and_then(|s| s.to_str()) {
            Some("lib") => path.parent().unwrap_or(Path::new("")).to_path_buf(),
            Some(stem) => path.with_file_name(stem),
            None => continue,
        };
        let lines: Vec<&str> = text.lines().collect();
        for w in lines.windows(2) {
            let decl = w[1].trim();
            if w[0].trim() == "#[cfg(test)]" && decl.ends_with(';') && decl.contains("mod ") {
                let name = decl.trim_end_matches(';').rsplit(' ').next().unwrap_or("");
                out.insert(dir.join(format!("{name}.rs")));
                out.insert(dir.join(name));
            }
        }
    }
    out
}

/// Every breach of `map` by the files (path relative to `src/` -> text), one line each.
fn breaches(map: &BTreeMap<String, Row>, files: &BTreeMap<PathBuf, String>) -> Vec<String> {
    let skip = test_only_files(files);
    let mut problems = Vec::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in files {
        if skip.iter().any(|s| path.starts_with(s)) {
            continue;
        }
        let Some(first) = path.components().next().and_then(|c| c.as_os_str().to_str()) else { continue };
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(row) = map.get(&module) else {
            problems.push(format!("src/{}: module {module} is not in the map", path.display()));
            continue;
        };
        let (layer, name) = (row.layer, &row.name);
        for target in imported(&production(text)) {
            if target == module {
                continue;
            }
            match map.get(&target) {
                None => problems.push(format!("src/{}: imports crate::{target}, which is not in the map", path.display())),
                Some(t) if t.layer > layer => problems.push(format!(
                    "src/{}: {module} (layer {layer} {name}) imports {target} (layer {} {}): a lower layer may not import a higher one",
                    path.display(),
                    t.layer,
                    t.name
                )),
                Some(t) => {
                    if !row.may.contains(&target) {
                        problems.push(format!("src/{}: {module} imports {target}, which its row of the map does not list", path.display()));
                    }
                    if t.layer == layer {
                        edges.entry(module.clone()).or_default().insert(target);
                    }
                }
            }
        }
    }
    problems.extend(circles(&edges));
    problems
}

/// Circles among modules of one layer, each named once as `a -> b -> a`.
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    fn walk(at: &str, edges: &BTreeMap<String, BTreeSet<String>>, path: &mut Vec<String>, found: &mut BTreeSet<Vec<String>>) {
        if let Some(i) = path.iter().position(|m| m == at) {
            let mut circle = path[i..].to_vec();
            let start = circle.iter().enumerate().min_by_key(|(_, m)| m.as_str()).map(|(i, _)| i).unwrap_or(0);
            circle.rotate_left(start);
            found.insert(circle);
            return;
        }
        path.push(at.to_string());
        for next in edges.get(at).into_iter().flatten() {
            walk(next, edges, path, found);
        }
        path.pop();
    }
    let mut found = BTreeSet::new();
    for start in edges.keys() {
        walk(start, edges, &mut Vec::new(), &mut found);
    }
    found.into_iter().map(|c| format!("import circle within a layer: {} -> {}", c.join(" -> "), c[0])).collect()
}

fn sources(dir: &Path, base: &Path, out: &mut BTreeMap<PathBuf, String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, base, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.insert(path.strip_prefix(base).unwrap().to_path_buf(), std::fs::read_to_string(&path).unwrap());
        }
    }
}

#[test]
fn no_module_imports_a_higher_layer_or_a_circle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/HACKING.md")).unwrap();
    let map = read_map(&doc).unwrap();
    let mut files = BTreeMap::new();
    sources(&root.join("src"), &root.join("src"), &mut files);
    let problems = breaches(&map, &files);
    assert!(problems.is_empty(), "the module map of docs/HACKING.md is broken:\n{}", problems.join("\n"));
    // The map lists exactly the crate's modules (lib.rs), so it stays the whole picture.
    let declared: BTreeSet<String> = files[Path::new("lib.rs")]
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod ")?.strip_suffix(';').map(str::to_string))
        .collect();
    let listed: BTreeSet<String> = map.keys().cloned().collect();
    assert_eq!(declared, listed, "src/lib.rs's modules and docs/HACKING.md's module map differ");
}

#[test]
fn the_check_catches_an_upward_import_and_a_circle_and_skips_tests_and_comments() {
    let map = read_map(
        "# x\n## Module map\n| module | layer | owns | may import |\n|---|---|---|---|\n| `low` | 1 base | x | — |\n| `a` | 2 mid | x | `b`, `low` |\n\
         | `b` | 2 mid | x | — |\n| `top` | 3 top | x | `low` |\n## Next\n| `ignored` | 9 x | x | x |\n",
    )
    .unwrap();
    assert_eq!(map.len(), 4);
    let files: BTreeMap<PathBuf, String> = [
        ("low.rs", "//! see [`crate::top`]\nuse crate::{top::Thing, a};\n#[cfg(test)]\nmod fixture;\n"),
        ("low/fixture.rs", "use crate::top;\n"),
        ("a.rs", "use crate::b::X;\nfn f() { crate::low::g() }\n#[cfg(test)]\nmod tests {\n    use crate::top;\n}\n"),
        ("b/inner.rs", "pub fn h() { crate::a::f() }\n"),
        ("top.rs", "use crate::{low, a::{self}};\n"),
    ]
    .into_iter()
    .map(|(p, t)| (PathBuf::from(p), t.to_string()))
    .collect();
    let got = breaches(&map, &files);
    assert_eq!(
        got,
        [
            "src/b/inner.rs: b imports a, which its row of the map does not list",
            "src/low.rs: low (layer 1 base) imports a (layer 2 mid): a lower layer may not import a higher one",
            "src/low.rs: low (layer 1 base) imports top (layer 3 top): a lower layer may not import a higher one",
            "src/top.rs: top imports a, which its row of the map does not list",
            "import circle within a layer: a -> b -> a",
        ]
    );
}
