//! No import cycles between modules, in any crate of the workspace.
//!
//! Each crate's `src` tree is parsed (with `syn`) into a graph of its files: an edge from
//! file A to file B when code in A names an item of a module defined in B, through
//! `use` or a path (`crate::…`, `super::…`, `self::…`, a child module's name), inside
//! macro invocations too (code under `#[cfg(test)]` is left out: unit tests may name
//! whatever they test with); a path through a `pub use` re-export depends on the module
//! that defines the item (as in `cargo modules`), not on the facade. A module may use what its ancestors define (they own it: the facade idiom
//! of a `mod.rs` with the types its children share), so edges to an ancestor are not
//! counted; every other edge is, and the graph must be acyclic (Tarjan's strongly
//! connected components). The test fails naming the files of each cycle and the paths
//! that close it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

/// A module path inside one crate (`[]` is the crate root).
type ModPath = Vec<String>;

/// One module: the file defining it and what it names.
#[derive(Default)]
struct Module {
    /// The file that holds the module (an inline module shares its parent's file).
    file: PathBuf,
    /// Names brought in by `use` (renamed or not) → the absolute path they stand for,
    /// for following re-exports.
    uses: BTreeMap<String, Vec<String>>,
    /// Glob imports (`use a::b::*`), as absolute module paths.
    globs: Vec<ModPath>,
    /// Every path named in the module (already absolute where it starts with
    /// `crate`/`super`/`self`; relative ones are resolved later).
    paths: Vec<Vec<String>>,
}

/// The modules of one crate, parsed from its root file.
struct Crate {
    modules: BTreeMap<ModPath, Module>,
}

impl Crate {
    fn load(root: &Path) -> Crate {
        let mut krate = Crate {
            modules: BTreeMap::new(),
        };
        let dir = root.parent().expect("root dir").to_path_buf();
        krate.load_file(root, Vec::new(), &dir);
        krate
    }

    /// Parses `file` as module `path`, whose `mod x;` children live in `child_dir`.
    fn load_file(&mut self, file: &Path, path: ModPath, child_dir: &Path) {
        let text = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        let ast =
            syn::parse_file(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", file.display()));
        self.load_items(&ast.items, file, path, child_dir);
    }

    fn load_items(&mut self, items: &[syn::Item], file: &Path, path: ModPath, child_dir: &Path) {
        let mut collector = Collector {
            module: path.clone(),
            uses: BTreeMap::new(),
            globs: Vec::new(),
            paths: Vec::new(),
        };
        for item in items {
            if is_test_only(item_attrs(item)) {
                continue;
            }
            match item {
                syn::Item::Mod(m) => {
                    let name = m.ident.to_string();
                    let mut child = path.clone();
                    child.push(name.clone());
                    let dir = child_dir.join(&name);
                    match &m.content {
                        Some((_, inner)) => self.load_items(inner, file, child, &dir),
                        None => {
                            let flat = child_dir.join(format!("{name}.rs"));
                            let nested = dir.join("mod.rs");
                            let child_file = if flat.exists() { flat } else { nested };
                            self.load_file(&child_file, child, &dir);
                        }
                    }
                }
                other => collector.visit_item(other),
            }
        }
        let module = self.modules.entry(path).or_default();
        module.file = file.to_path_buf();
        module.uses.extend(collector.uses);
        module.globs.extend(collector.globs);
        module.paths.extend(collector.paths);
    }

    /// The module a path names, and the rest of the path inside it. `from` is the module
    /// the path is written in; `None` for a path outside the crate (std, other crates,
    /// local names).
    fn resolve(&self, from: &ModPath, segments: &[String]) -> Option<(ModPath, Vec<String>)> {
        self.resolve_at(from, segments, 0)
    }

    fn resolve_at(
        &self,
        from: &ModPath,
        segments: &[String],
        depth: usize,
    ) -> Option<(ModPath, Vec<String>)> {
        if depth > 16 {
            return None;
        }
        let (mut base, rest): (ModPath, &[String]) = match segments.first()?.as_str() {
            "crate" => (Vec::new(), &segments[1..]),
            "self" => (from.clone(), &segments[1..]),
            "super" => {
                let mut base = from.clone();
                let mut i = 0;
                while segments.get(i).map(String::as_str) == Some("super") {
                    base.pop();
                    i += 1;
                }
                (base, &segments[i..])
            }
            first => {
                let mut child = from.clone();
                child.push(first.to_string());
                if self.modules.contains_key(&child) {
                    (from.clone(), segments)
                } else if let Some(target) = self.modules.get(from).and_then(|m| m.uses.get(first))
                {
                    // A name imported into this module: the path continues from there.
                    let mut full = target.clone();
                    full.extend_from_slice(&segments[1..]);
                    return self.resolve_at(from, &full, depth + 1);
                } else {
                    return None;
                }
            }
        };
        let mut i = 0;
        while i < rest.len() {
            let mut next = base.clone();
            next.push(rest[i].clone());
            if !self.modules.contains_key(&next) {
                break;
            }
            base = next;
            i += 1;
        }
        Some((base, rest[i..].to_vec()))
    }

    /// The module that defines the item a path names, following `use` re-exports (a
    /// facade module re-exporting its children's items is not a dependency of its own).
    fn defining_module(&self, from: &ModPath, segments: &[String]) -> Option<ModPath> {
        let (mut module, mut rest) = self.resolve(from, segments)?;
        for _ in 0..16 {
            let Some(name) = rest.first() else { break };
            let Some(target) = self.modules.get(&module).and_then(|m| m.uses.get(name)) else {
                break;
            };
            let mut full = target.clone();
            full.extend_from_slice(&rest[1..]);
            match self.resolve(&module, &full) {
                Some((m, r)) if (m.clone(), r.clone()) != (module.clone(), rest.clone()) => {
                    module = m;
                    rest = r;
                }
                _ => break,
            }
        }
        Some(module)
    }

    /// File → files it depends on, with one example path per edge.
    fn file_graph(&self) -> BTreeMap<PathBuf, BTreeMap<PathBuf, String>> {
        let mut graph: BTreeMap<PathBuf, BTreeMap<PathBuf, String>> = BTreeMap::new();
        for (path, module) in &self.modules {
            graph.entry(module.file.clone()).or_default();
            let targets = module
                .paths
                .iter()
                .filter_map(|p| Some((self.defining_module(path, p)?, p.join("::"))))
                .chain(
                    module
                        .globs
                        .iter()
                        .map(|g| (g.clone(), format!("{}::*", g.join("::")))),
                );
            for (target, shown) in targets {
                // Using what an ancestor (or the module itself) defines is not an edge.
                if path.starts_with(&target) {
                    continue;
                }
                let file = &self.modules[&target].file;
                if file != &module.file {
                    graph
                        .entry(module.file.clone())
                        .or_default()
                        .entry(file.clone())
                        .or_insert(shown);
                }
            }
        }
        graph
    }
}

/// Collects the paths named by the items of one module (not descending into child
/// modules, which are loaded as modules of their own).
struct Collector {
    module: ModPath,
    uses: BTreeMap<String, Vec<String>>,
    globs: Vec<ModPath>,
    paths: Vec<Vec<String>>,
}

impl Collector {
    /// An absolute form of a `use` path written in this module (edition 2018: relative
    /// to this module when it does not start with `crate`/`self`/`super`).
    fn absolute(&self, segments: &[String]) -> Vec<String> {
        match segments.first().map(String::as_str) {
            Some("crate") => segments.to_vec(),
            Some("self") => {
                let mut abs = vec!["crate".to_string()];
                abs.extend(self.module.iter().cloned());
                abs.extend_from_slice(&segments[1..]);
                abs
            }
            Some("super") => {
                let mut base = self.module.clone();
                let mut i = 0;
                while segments.get(i).map(String::as_str) == Some("super") {
                    base.pop();
                    i += 1;
                }
                let mut abs = vec!["crate".to_string()];
                abs.extend(base);
                abs.extend_from_slice(&segments[i..]);
                abs
            }
            _ => segments.to_vec(),
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                self.use_name(prefix, n.ident.to_string(), n.ident.to_string())
            }
            syn::UseTree::Rename(r) => {
                self.use_name(prefix, r.ident.to_string(), r.rename.to_string())
            }
            syn::UseTree::Glob(_) => {
                let abs = self.absolute(prefix);
                if abs.first().map(String::as_str) == Some("crate") {
                    self.globs.push(abs[1..].to_vec());
                } else {
                    self.paths.push(abs);
                }
            }
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }

    fn use_name(&mut self, prefix: &[String], name: String, alias: String) {
        let mut full = prefix.to_vec();
        if name != "self" {
            full.push(name);
        }
        let abs = self.absolute(&full);
        self.paths.push(abs.clone());
        if alias != "self" && alias != "_" {
            self.uses.insert(alias, abs);
        } else if alias == "self" {
            if let Some(last) = prefix.last() {
                self.uses.insert(last.clone(), abs);
            }
        }
    }

    /// Paths inside a macro's tokens: `a::b::c` runs of identifiers.
    fn tokens(&mut self, tokens: TokenStream) {
        let mut run: Vec<String> = Vec::new();
        let mut colons = 0;
        for tt in tokens {
            match tt {
                TokenTree::Ident(ident) => {
                    if colons != 2 && !run.is_empty() {
                        self.flush(&mut run);
                    }
                    run.push(ident.to_string());
                    colons = 0;
                }
                TokenTree::Punct(p) if p.as_char() == ':' => colons += 1,
                TokenTree::Group(g) => {
                    self.flush(&mut run);
                    colons = 0;
                    self.tokens(g.stream());
                }
                _ => {
                    self.flush(&mut run);
                    colons = 0;
                }
            }
        }
        self.flush(&mut run);
    }

    fn flush(&mut self, run: &mut Vec<String>) {
        if run.len() > 1 {
            self.paths.push(self.absolute(run));
        }
        run.clear();
    }
}

impl<'ast> Visit<'ast> for Collector {
    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &u.tree);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segments: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        if segments.len() > 1 {
            self.paths.push(self.absolute(&segments));
        }
        syn::visit::visit_path(self, p);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        self.visit_path(&m.path);
        self.tokens(m.tokens.clone());
    }

    fn visit_item(&mut self, item: &'ast syn::Item) {
        if !is_test_only(item_attrs(item)) {
            syn::visit::visit_item(self, item);
        }
    }

    fn visit_impl_item(&mut self, item: &'ast syn::ImplItem) {
        let attrs = match item {
            syn::ImplItem::Const(i) => &i.attrs,
            syn::ImplItem::Fn(i) => &i.attrs,
            syn::ImplItem::Type(i) => &i.attrs,
            syn::ImplItem::Macro(i) => &i.attrs,
            _ => return syn::visit::visit_impl_item(self, item),
        };
        if !is_test_only(attrs) {
            syn::visit::visit_impl_item(self, item);
        }
    }

    fn visit_item_mod(&mut self, _: &'ast syn::ItemMod) {
        // Nested modules (inside functions or blocks) are rare; their own paths are not
        // followed.
    }
}

/// The attributes of an item.
fn item_attrs(item: &syn::Item) -> &[syn::Attribute] {
    match item {
        syn::Item::Const(i) => &i.attrs,
        syn::Item::Enum(i) => &i.attrs,
        syn::Item::ExternCrate(i) => &i.attrs,
        syn::Item::Fn(i) => &i.attrs,
        syn::Item::ForeignMod(i) => &i.attrs,
        syn::Item::Impl(i) => &i.attrs,
        syn::Item::Macro(i) => &i.attrs,
        syn::Item::Mod(i) => &i.attrs,
        syn::Item::Static(i) => &i.attrs,
        syn::Item::Struct(i) => &i.attrs,
        syn::Item::Trait(i) => &i.attrs,
        syn::Item::TraitAlias(i) => &i.attrs,
        syn::Item::Type(i) => &i.attrs,
        syn::Item::Union(i) => &i.attrs,
        syn::Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

/// Whether an item is compiled for tests only (`#[cfg(test)]`): unit tests may name
/// whatever they test with, so they are not part of the module graph.
fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Ident>()
                .is_ok_and(|ident| ident == "test")
    })
}

/// The strongly connected components with more than one file (Tarjan).
fn cycles(graph: &BTreeMap<PathBuf, BTreeMap<PathBuf, String>>) -> Vec<Vec<PathBuf>> {
    struct Tarjan<'g> {
        graph: &'g BTreeMap<PathBuf, BTreeMap<PathBuf, String>>,
        index: BTreeMap<&'g PathBuf, usize>,
        low: BTreeMap<&'g PathBuf, usize>,
        stack: Vec<&'g PathBuf>,
        on_stack: BTreeSet<&'g PathBuf>,
        out: Vec<Vec<PathBuf>>,
    }
    impl<'g> Tarjan<'g> {
        fn visit(&mut self, v: &'g PathBuf) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flat_map(|e| e.keys()) {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("low");
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("low");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                loop {
                    let w = self.stack.pop().expect("stack");
                    self.on_stack.remove(w);
                    component.push(w.clone());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.out.push(component);
                }
            }
        }
    }
    let mut t = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    t.out
}

/// The crate roots of the workspace (libraries, binaries, bench binaries).
fn crate_roots(workspace: &Path) -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = [
        "src/main.rs",
        "shared/src/lib.rs",
        "shared/storage/src/lib.rs",
        "zookeeper/src/lib.rs",
        "zookeeper/cluster/src/lib.rs",
        "broker/src/lib.rs",
        "device-fw/src/lib.rs",
        "bench/src/lib.rs",
    ]
    .iter()
    .map(|r| workspace.join(r))
    .collect();
    let bins = std::fs::read_dir(workspace.join("bench/src/bin")).expect("bench/src/bin");
    let mut bins: Vec<PathBuf> = bins.map(|e| e.expect("dir entry").path()).collect();
    bins.sort();
    roots.extend(
        bins.into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "rs")),
    );
    roots
}

/// Describes the cycles of one crate, or `None` when it has none.
fn report(root: &Path, workspace: &Path) -> Option<String> {
    let krate = Crate::load(root);
    let graph = krate.file_graph();
    let found = cycles(&graph);
    if found.is_empty() {
        return None;
    }
    let rel = |p: &Path| p.strip_prefix(workspace).unwrap_or(p).display().to_string();
    let mut text = String::new();
    for component in found {
        let members: BTreeSet<&PathBuf> = component.iter().collect();
        text.push_str(&format!(
            "cycle of {} files in {}:\n",
            component.len(),
            rel(root)
        ));
        for file in &component {
            for (to, shown) in &graph[file] {
                if members.contains(to) {
                    text.push_str(&format!("  {} -> {}  ({shown})\n", rel(file), rel(to)));
                }
            }
        }
    }
    Some(text)
}

#[test]
fn no_import_cycles_between_modules() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let reports: Vec<String> = crate_roots(workspace)
        .iter()
        .filter_map(|root| report(root, workspace))
        .collect();
    assert!(
        reports.is_empty(),
        "import cycles between modules:\n{}",
        reports.join("")
    );
}

#[test]
fn a_cycle_is_detected() {
    // Two sibling modules naming each other, written out as a small crate.
    let dir = std::env::temp_dir().join(format!("pehra-module-cycles-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("a")).expect("mkdir");
    let files = [
        ("lib.rs", "mod a;\nmod b;\npub use a::A;\n"),
        ("a/mod.rs", "mod inner;\npub struct A;\npub use inner::I;\n"),
        ("a/inner.rs", "pub struct I(crate::b::B);\n"),
        ("b.rs", "pub struct B;\nfn f() { let _ = super::A; }\n"),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("write");
    }
    let text =
        report(&dir.join("lib.rs"), &dir).expect("the cycle a/inner -> b -> lib -> a is found");
    std::fs::remove_dir_all(&dir).expect("rm");
    assert!(text.contains("a/inner.rs -> b.rs"), "{text}");
    assert!(text.contains("b.rs -> a/mod.rs"), "{text}");
}
