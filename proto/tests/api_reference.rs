//! `docs/api.md` is generated from the `.proto` files: this test compiles
//! every `.proto` under `proto/` with protox, keeping the comments, renders
//! the API reference as Markdown and compares it with the checked-in file.
//!
//! After changing a `.proto` file (or when this test fails), regenerate:
//!
//! ```sh
//! UPDATE_API_DOCS=1 cargo test -p orgauth-proto --test api_reference
//! ```
//!
//! What it renders, per package (orgauth's packages first, then any
//! third-party ones, such as `google.*`, whose shapes our services use):
//! each service and its RPCs with their request, response and comment;
//! each message with a table of its fields (name, type, number, comment);
//! each enum with its values. Files are taken in path order and everything
//! in a file in the order it is declared, so the output is deterministic.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorProto,
    ServiceDescriptorProto, SourceCodeInfo,
};

/// The command that rewrites `docs/api.md`.
const UPDATE_COMMAND: &str = "UPDATE_API_DOCS=1 cargo test -p orgauth-proto --test api_reference";

/// Packages under this prefix are ours; any other is a third-party shape.
const OWN_PREFIX: &str = "orgauth.";

// Field numbers inside descriptor.proto, which make up the paths of
// `SourceCodeInfo` locations.
const FILE_PACKAGE: i32 = 2;
const FILE_MESSAGE: i32 = 4;
const FILE_ENUM: i32 = 5;
const FILE_SERVICE: i32 = 6;
const MESSAGE_FIELD: i32 = 2;
const MESSAGE_NESTED: i32 = 3;
const MESSAGE_ENUM: i32 = 4;
const ENUM_VALUE: i32 = 2;
const SERVICE_METHOD: i32 = 2;

#[test]
fn api_reference_matches_the_protos() {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let doc_path = proto_root.join("../docs/api.md");
    let rendered = render(&compile(&proto_root));

    if std::env::var_os("UPDATE_API_DOCS").is_some_and(|value| value == "1") {
        std::fs::write(&doc_path, &rendered)
            .unwrap_or_else(|err| panic!("cannot write {}: {err}", doc_path.display()));
        return;
    }
    let current = std::fs::read_to_string(&doc_path).unwrap_or_default();
    if current != rendered {
        let first_difference = current
            .lines()
            .zip(rendered.lines())
            .position(|(old, new)| old != new)
            .unwrap_or_else(|| current.lines().count().min(rendered.lines().count()));
        panic!(
            "docs/api.md is out of date with the .proto files (first difference at line {}).\n\
             Regenerate it with:\n\n    {UPDATE_COMMAND}\n",
            first_difference + 1
        );
    }
}

/// Every `.proto` file under `root`, as paths relative to it with `/`
/// separators, sorted.
fn proto_files(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|err| panic!("cannot list {}: {err}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            // Build output and dependencies never hold our API.
            let skipped = ["target", "tests", "src"];
            if path.is_dir() {
                let name = path.file_name().and_then(|name| name.to_str());
                if dir != root || !name.is_some_and(|name| skipped.contains(&name)) {
                    dirs.push(path);
                }
            } else if path.extension().is_some_and(|ext| ext == "proto") {
                let relative = path.strip_prefix(root).expect("under the root");
                let parts: Vec<&str> = relative
                    .components()
                    .map(|part| part.as_os_str().to_str().expect("UTF-8 path"))
                    .collect();
                files.push(parts.join("/"));
            }
        }
    }
    files.sort();
    assert!(
        !files.is_empty(),
        "no .proto files under {}",
        root.display()
    );
    files
}

/// Compiles every `.proto` under `root` with its comments; only those files,
/// not the well-known types they import.
fn compile(root: &Path) -> Vec<FileDescriptorProto> {
    let files = proto_files(root);
    let mut compiler = protox::Compiler::new([root]).expect("protox compiler");
    compiler.include_source_info(true).include_imports(false);
    for file in &files {
        if let Err(err) = compiler.open_file(file) {
            panic!("protox cannot compile {file}: {err:?}");
        }
    }
    let mut compiled = compiler.file_descriptor_set().file;
    compiled.sort_by(|a, b| a.name().cmp(b.name()));
    compiled
}

/// The comments of one file: the one attached to each element, by its
/// location path, and the file's own (see [`Comments::overview`]).
struct Comments {
    by_path: BTreeMap<Vec<i32>, String>,
    overview: Vec<String>,
}

impl Comments {
    fn of(info: Option<&SourceCodeInfo>) -> Comments {
        let locations = info
            .map(|info| info.location.as_slice())
            .unwrap_or_default();
        let mut by_path = BTreeMap::new();
        for location in locations {
            // The comment just above an element, or else the one after it
            // on its line.
            let text = location
                .leading_comments
                .as_deref()
                .filter(|text| !text.trim().is_empty())
                .or(location.trailing_comments.as_deref());
            if let Some(text) = text {
                by_path.insert(location.path.clone(), clean(text));
            }
        }
        // A file's overview: comments standing apart (a blank line below
        // them) before the package statement or before the first
        // definition, and the package statement's own comment.
        let first_definition = locations
            .iter()
            .filter(|l| {
                l.path.len() == 2 && [FILE_MESSAGE, FILE_ENUM, FILE_SERVICE].contains(&l.path[0])
            })
            .min_by_key(|l| l.span.first().copied().unwrap_or(i32::MAX));
        let package = locations.iter().find(|l| l.path == [FILE_PACKAGE]);
        let mut overview: Vec<String> = Vec::new();
        for location in package.into_iter().chain(first_definition) {
            overview.extend(location.leading_detached_comments.iter().map(|c| clean(c)));
        }
        if let Some(text) = by_path.get([FILE_PACKAGE].as_slice()) {
            overview.push(text.clone());
        }
        overview.retain(|text| !text.is_empty());
        Comments { by_path, overview }
    }

    fn at(&self, path: &[i32]) -> &str {
        self.by_path
            .get(path)
            .map(String::as_str)
            .unwrap_or_default()
    }
}

/// A comment's lines without the one space after `//` and without blank
/// lines at either end.
fn clean(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(|line| line.strip_prefix(' ').unwrap_or(line).trim_end())
        .collect();
    lines.join("\n").trim_matches('\n').to_owned()
}

/// A comment as Markdown prose: paragraphs kept; `<` escaped outside code
/// spans so that `<token>` is not taken for HTML.
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut in_code = false;
    for c in text.chars() {
        match c {
            '`' => {
                in_code = !in_code;
                out.push(c);
            }
            '<' if !in_code => out.push_str("&lt;"),
            _ => out.push(c),
        }
    }
    out
}

/// A comment on one line, fit for a table cell.
fn cell(text: &str) -> String {
    text.split("\n\n")
        .map(|paragraph| paragraph.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|paragraph| !paragraph.is_empty())
        .map(|paragraph| prose(&paragraph).replace('|', "\\|"))
        .collect::<Vec<_>>()
        .join("<br><br>")
}

/// A package's elements, gathered from all of its files.
#[derive(Default)]
struct Package {
    files: Vec<String>,
    /// The files' overview comments.
    overview: Vec<String>,
    services: Vec<String>,
    messages: Vec<String>,
    enums: Vec<String>,
}

/// Renders the whole reference.
fn render(files: &[FileDescriptorProto]) -> String {
    // Full names (without the leading dot) of everything rendered, for links.
    let mut known = BTreeSet::new();
    for file in files {
        let package = file.package();
        for message in &file.message_type {
            collect_names(&mut known, package, message);
        }
        for enumeration in &file.enum_type {
            known.insert(join(package, enumeration.name()));
        }
    }

    let mut packages: BTreeMap<(bool, String), Package> = BTreeMap::new();
    for file in files {
        let name = file.package().to_owned();
        let key = (!name.starts_with(OWN_PREFIX), name.clone());
        let package = packages.entry(key).or_default();
        let comments = Comments::of(file.source_code_info.as_ref());
        package.files.push(file.name().to_owned());
        package.overview.extend(comments.overview.iter().cloned());
        let renderer = Renderer {
            package: &name,
            known: &known,
            comments: &comments,
        };
        for (i, service) in file.service.iter().enumerate() {
            package
                .services
                .push(renderer.service(service, &[FILE_SERVICE, index(i)]));
        }
        for (i, message) in file.message_type.iter().enumerate() {
            renderer.message(
                &mut package.messages,
                &mut package.enums,
                "",
                message,
                &[FILE_MESSAGE, index(i)],
            );
        }
        for (i, enumeration) in file.enum_type.iter().enumerate() {
            package
                .enums
                .push(renderer.enumeration("", enumeration, &[FILE_ENUM, index(i)]));
        }
    }

    let mut out = String::new();
    out.push_str("# API reference\n\n");
    out.push_str(
        "<!-- Generated from the comments in proto/ by proto/tests/api_reference.rs: \
         do not edit by hand. -->\n\n",
    );
    let _ = writeln!(
        out,
        "Generated from the comments in the `.proto` files under [`proto/`](../proto) \
         by `proto/tests/api_reference.rs`; do not edit it by hand. After changing a \
         `.proto` file, regenerate it with\n\n```sh\n{UPDATE_COMMAND}\n```\n"
    );
    out.push_str(
        "Every RPC of `orgauth.*` needs `authorization: Bearer <token>`; errors carry \
         `google.rpc.ErrorInfo` (see the README's Security section). Timestamps are \
         `google.protobuf.Timestamp` and update masks `google.protobuf.FieldMask`, \
         protobuf's well-known types.\n\n",
    );
    let third_party: Vec<&String> = packages
        .keys()
        .filter(|(foreign, _)| *foreign)
        .map(|(_, name)| name)
        .collect();
    out.push_str("Packages:\n\n");
    for (foreign, name) in packages.keys() {
        let note = if *foreign {
            " (third-party API shape)"
        } else {
            ""
        };
        let _ = writeln!(out, "- [`{name}`](#{}){note}", name);
    }
    out.push('\n');

    let mut third_party_heading = false;
    for ((foreign, name), package) in &packages {
        if *foreign && !third_party_heading {
            third_party_heading = true;
            out.push_str("# Third-party API shapes\n\n");
            let _ = writeln!(
                out,
                "Not orgauth's packages: the shapes of APIs others publish ({}), with \
                 their names and field numbers, kept under `proto/` because org-server \
                 serves or returns them. The comments say how orgauth uses them.\n",
                third_party
                    .iter()
                    .map(|name| format!("`{name}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let _ = writeln!(out, "<a id=\"{}\"></a>\n", name);
        let _ = writeln!(out, "## Package `{name}`\n");
        for paragraph in &package.overview {
            let _ = writeln!(out, "{}\n", prose(paragraph));
        }
        let files: Vec<String> = package
            .files
            .iter()
            .map(|file| format!("`proto/{file}`"))
            .collect();
        let _ = writeln!(out, "Files: {}.\n", files.join(", "));
        for (title, items) in [
            ("Services", &package.services),
            ("Messages", &package.messages),
            ("Enums", &package.enums),
        ] {
            if items.is_empty() {
                continue;
            }
            let _ = writeln!(out, "### {title}\n");
            for item in items {
                out.push_str(item);
            }
        }
    }
    // One trailing newline, as editors leave it.
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

fn collect_names(known: &mut BTreeSet<String>, scope: &str, message: &DescriptorProto) {
    let name = join(scope, message.name());
    for nested in &message.nested_type {
        collect_names(known, &name, nested);
    }
    for enumeration in &message.enum_type {
        known.insert(join(&name, enumeration.name()));
    }
    known.insert(name);
}

fn join(scope: &str, name: &str) -> String {
    if scope.is_empty() {
        name.to_owned()
    } else {
        format!("{scope}.{name}")
    }
}

fn index(i: usize) -> i32 {
    i32::try_from(i).expect("fewer than 2^31 elements")
}

fn path(parent: &[i32], more: &[i32]) -> Vec<i32> {
    let mut path = parent.to_vec();
    path.extend_from_slice(more);
    path
}

/// Renders the elements of one file.
struct Renderer<'a> {
    package: &'a str,
    known: &'a BTreeSet<String>,
    comments: &'a Comments,
}

impl Renderer<'_> {
    /// A type name as shown: relative to the package when inside it, linked
    /// when rendered in this document.
    fn type_ref(&self, type_name: &str) -> String {
        let full = type_name.trim_start_matches('.');
        let shown = full
            .strip_prefix(self.package)
            .and_then(|rest| rest.strip_prefix('.'))
            .unwrap_or(full);
        if self.known.contains(full) {
            format!("[`{shown}`](#{})", full)
        } else {
            format!("`{shown}`")
        }
    }

    fn service(&self, service: &ServiceDescriptorProto, at: &[i32]) -> String {
        let full = join(self.package, service.name());
        let mut out = String::new();
        let _ = writeln!(out, "<a id=\"{}\"></a>\n", full);
        let _ = writeln!(out, "#### {}\n", service.name());
        let comment = self.comments.at(at);
        if !comment.is_empty() {
            let _ = writeln!(out, "{}\n", prose(comment));
        }
        for (i, method) in service.method.iter().enumerate() {
            let _ = writeln!(out, "##### {}\n", method.name());
            let _ = writeln!(
                out,
                "`/{full}/{}`: {}{} → {}{}\n",
                method.name(),
                if method.client_streaming() {
                    "stream "
                } else {
                    ""
                },
                self.type_ref(method.input_type()),
                if method.server_streaming() {
                    "stream "
                } else {
                    ""
                },
                self.type_ref(method.output_type()),
            );
            let comment = self
                .comments
                .at(&path(at, &[SERVICE_METHOD, index(i)]))
                .to_owned();
            if !comment.is_empty() {
                let _ = writeln!(out, "{}\n", prose(&comment));
            }
        }
        out
    }

    /// Renders `message` and, after it, its nested messages and enums.
    fn message(
        &self,
        messages: &mut Vec<String>,
        enums: &mut Vec<String>,
        scope: &str,
        message: &DescriptorProto,
        at: &[i32],
    ) {
        // Map fields are carried by synthetic nested entry messages.
        if message.options.as_ref().is_some_and(|o| o.map_entry()) {
            return;
        }
        let shown = join(scope, message.name());
        let full = join(self.package, &shown);
        let mut out = String::new();
        let _ = writeln!(out, "<a id=\"{}\"></a>\n", full);
        let _ = writeln!(out, "#### {shown}\n");
        let comment = self.comments.at(at);
        if !comment.is_empty() {
            let _ = writeln!(out, "{}\n", prose(comment));
        }
        if message.field.is_empty() {
            out.push_str("No fields.\n\n");
        } else {
            out.push_str("| field | type | number | description |\n");
            out.push_str("| --- | --- | --- | --- |\n");
            for (i, field) in message.field.iter().enumerate() {
                let mut description = cell(self.comments.at(&path(at, &[MESSAGE_FIELD, index(i)])));
                if let Some(oneof) = self.oneof_of(message, field) {
                    let note = format!("Member of oneof `{oneof}`.");
                    description = if description.is_empty() {
                        note
                    } else {
                        format!("{description} {note}")
                    };
                }
                if field.options.as_ref().is_some_and(|o| o.deprecated()) {
                    description = format!("**Deprecated.** {description}");
                }
                let _ = writeln!(
                    out,
                    "| `{}` | {} | {} | {} |",
                    field.name(),
                    self.field_type(message, field),
                    field.number(),
                    description.trim_end()
                );
            }
            out.push('\n');
        }
        messages.push(out);
        for (i, nested) in message.nested_type.iter().enumerate() {
            self.message(
                messages,
                enums,
                &shown,
                nested,
                &path(at, &[MESSAGE_NESTED, index(i)]),
            );
        }
        for (i, enumeration) in message.enum_type.iter().enumerate() {
            enums.push(self.enumeration(&shown, enumeration, &path(at, &[MESSAGE_ENUM, index(i)])));
        }
    }

    /// The real (not proto3-optional) oneof a field belongs to.
    fn oneof_of<'m>(
        &self,
        message: &'m DescriptorProto,
        field: &FieldDescriptorProto,
    ) -> Option<&'m str> {
        if field.proto3_optional() {
            return None;
        }
        let index = usize::try_from(field.oneof_index?).ok()?;
        message.oneof_decl.get(index).map(|oneof| oneof.name())
    }

    fn field_type(&self, message: &DescriptorProto, field: &FieldDescriptorProto) -> String {
        if field.label() == Label::Repeated
            && let Some(entry) = self.map_entry(message, field)
        {
            let key = &entry.field[0];
            let value = &entry.field[1];
            return format!(
                "map&lt;{}, {}&gt;",
                self.plain_type(key),
                self.plain_type(value)
            );
        }
        let plain = self.plain_type(field);
        match field.label() {
            Label::Repeated => format!("repeated {plain}"),
            _ if field.proto3_optional() => format!("optional {plain}"),
            _ => plain,
        }
    }

    /// The synthetic entry message of a map field, if it is one.
    fn map_entry<'m>(
        &self,
        message: &'m DescriptorProto,
        field: &FieldDescriptorProto,
    ) -> Option<&'m DescriptorProto> {
        if field.r#type() != Type::Message {
            return None;
        }
        let entry_name = field.type_name().rsplit('.').next()?;
        message.nested_type.iter().find(|nested| {
            nested.name() == entry_name && nested.options.as_ref().is_some_and(|o| o.map_entry())
        })
    }

    fn plain_type(&self, field: &FieldDescriptorProto) -> String {
        let scalar = match field.r#type() {
            Type::Message | Type::Enum | Type::Group => return self.type_ref(field.type_name()),
            Type::Double => "double",
            Type::Float => "float",
            Type::Int64 => "int64",
            Type::Uint64 => "uint64",
            Type::Int32 => "int32",
            Type::Fixed64 => "fixed64",
            Type::Fixed32 => "fixed32",
            Type::Bool => "bool",
            Type::String => "string",
            Type::Bytes => "bytes",
            Type::Uint32 => "uint32",
            Type::Sfixed32 => "sfixed32",
            Type::Sfixed64 => "sfixed64",
            Type::Sint32 => "sint32",
            Type::Sint64 => "sint64",
        };
        format!("`{scalar}`")
    }

    fn enumeration(&self, scope: &str, enumeration: &EnumDescriptorProto, at: &[i32]) -> String {
        let shown = join(scope, enumeration.name());
        let full = join(self.package, &shown);
        let mut out = String::new();
        let _ = writeln!(out, "<a id=\"{}\"></a>\n", full);
        let _ = writeln!(out, "#### {shown}\n");
        let comment = self.comments.at(at);
        if !comment.is_empty() {
            let _ = writeln!(out, "{}\n", prose(comment));
        }
        out.push_str("| value | number | description |\n");
        out.push_str("| --- | --- | --- |\n");
        for (i, value) in enumeration.value.iter().enumerate() {
            let description = cell(self.comments.at(&path(at, &[ENUM_VALUE, index(i)])));
            let _ = writeln!(
                out,
                "| `{}` | {} | {} |",
                value.name(),
                value.number(),
                description
            );
        }
        out.push('\n');
        out
    }
}
