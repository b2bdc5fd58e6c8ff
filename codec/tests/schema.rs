//! Proves that `schema/exchange.xml` and the Rust layouts describe the same wire format: schema
//! id and version, the message header, every message's template id, block length and direction,
//! every field's name, type, offset and size (fields tiling each block with no gap or overlap),
//! and every enum's codes and names. Any drift between the XML and the Rust code fails here.

#[macro_use]
mod common;

use codec::*;
use roxmltree::{Document, Node};
use std::collections::{BTreeMap, BTreeSet};
use std::mem::offset_of;
use zerocopy::little_endian::{U16, U32};

const SBE_NAMESPACE: &str = "http://fixprotocol.io/2016/sbe";

// ------------------------------------------------------------------------------------------------
// The XML side
// ------------------------------------------------------------------------------------------------

/// A named type from `<types>`: `<type>`, `<enum>` or `<composite>`.
#[derive(Debug)]
struct XmlType {
    /// `type`, `enum` or `composite`.
    kind: String,
    /// The primitive (`primitiveType` of a type, `encodingType` of an enum; empty for composites).
    primitive: String,
    /// Encoded size in bytes.
    size: usize,
}

#[derive(Debug)]
struct XmlEnum {
    encoding: String,
    values: Vec<(String, u16)>,
}

#[derive(Debug)]
struct XmlField {
    name: String,
    id: u32,
    type_name: String,
    offset: usize,
}

#[derive(Debug)]
struct XmlMessage {
    name: String,
    id: u16,
    block_length: usize,
    fields: Vec<XmlField>,
}

/// A composite's member: name, primitive, offset, size.
type XmlMember = (String, String, usize, usize);

struct Schema {
    id: u16,
    version: u16,
    package: String,
    byte_order: String,
    header_type: String,
    types: BTreeMap<String, XmlType>,
    enums: BTreeMap<String, XmlEnum>,
    composites: BTreeMap<String, Vec<XmlMember>>,
    messages: Vec<XmlMessage>,
}

fn primitive_size(primitive: &str) -> usize {
    match primitive {
        "char" | "int8" | "uint8" => 1,
        "int16" | "uint16" => 2,
        "int32" | "uint32" | "float" => 4,
        "int64" | "uint64" | "double" => 8,
        other => panic!("unknown primitive type {other:?}"),
    }
}

fn attr<'a>(node: Node<'a, '_>, name: &str) -> &'a str {
    node.attribute(name)
        .unwrap_or_else(|| panic!("<{}> at {:?} has no {name:?} attribute", node.tag_name().name(), node.range()))
}

fn num<T: std::str::FromStr>(node: Node<'_, '_>, name: &str) -> T {
    let text = attr(node, name);
    text.trim().parse().unwrap_or_else(|_| panic!("{name}={text:?} is not a valid number"))
}

fn elements<'a, 'i>(node: Node<'a, 'i>, name: &'a str) -> impl Iterator<Item = Node<'a, 'i>> {
    node.children().filter(move |n| n.is_element() && n.tag_name().name() == name)
}

fn schema_text() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/exchange.xml");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn parse(text: &str) -> Schema {
    let doc = Document::parse(text).expect("schema XML is well-formed");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "messageSchema");
    assert_eq!(root.tag_name().namespace(), Some(SBE_NAMESPACE));

    let mut types = BTreeMap::new();
    let mut enums = BTreeMap::new();
    let mut composites = BTreeMap::new();
    let mut insert = |name: &str, ty: XmlType| {
        assert!(types.insert(name.to_owned(), ty).is_none(), "type {name} defined twice");
    };
    for types_node in elements(root, "types") {
        for node in types_node.children().filter(Node::is_element) {
            let name = attr(node, "name");
            match node.tag_name().name() {
                "type" => {
                    let primitive = attr(node, "primitiveType").to_owned();
                    let length = node.attribute("length").map_or(1, |_| num::<usize>(node, "length"));
                    let size = primitive_size(&primitive) * length;
                    insert(name, XmlType { kind: "type".into(), primitive, size });
                }
                "enum" => {
                    let encoding = attr(node, "encodingType").to_owned();
                    let values = elements(node, "validValue")
                        .map(|v| {
                            let code = v.text().unwrap_or_default().trim();
                            let code: u16 = code
                                .parse()
                                .unwrap_or_else(|_| panic!("enum {name}: validValue {code:?} is not a number"));
                            (attr(v, "name").to_owned(), code)
                        })
                        .collect();
                    let size = primitive_size(&encoding);
                    insert(name, XmlType { kind: "enum".into(), primitive: encoding.clone(), size });
                    enums.insert(name.to_owned(), XmlEnum { encoding, values });
                }
                "composite" => {
                    let mut offset = 0;
                    let mut members = Vec::new();
                    for member in elements(node, "type") {
                        if member.attribute("offset").is_some() {
                            offset = num(member, "offset");
                        }
                        let primitive = attr(member, "primitiveType").to_owned();
                        let length = member.attribute("length").map_or(1, |_| num::<usize>(member, "length"));
                        let size = primitive_size(&primitive) * length;
                        members.push((attr(member, "name").to_owned(), primitive, offset, size));
                        offset += size;
                    }
                    insert(name, XmlType { kind: "composite".into(), primitive: String::new(), size: offset });
                    composites.insert(name.to_owned(), members);
                }
                other => panic!("unexpected <{other}> in <types>"),
            }
        }
    }

    let messages = elements(root, "message")
        .map(|node| {
            assert_eq!(node.tag_name().namespace(), Some(SBE_NAMESPACE), "sbe:message namespace");
            XmlMessage {
                name: attr(node, "name").to_owned(),
                id: num(node, "id"),
                block_length: num(node, "blockLength"),
                fields: node
                    .children()
                    .filter(Node::is_element)
                    .map(|f| {
                        assert_eq!(
                            f.tag_name().name(),
                            "field",
                            "message {}: only fixed fields are expected (no groups or var data)",
                            attr(node, "name")
                        );
                        XmlField {
                            name: attr(f, "name").to_owned(),
                            id: num(f, "id"),
                            type_name: attr(f, "type").to_owned(),
                            offset: num(f, "offset"),
                        }
                    })
                    .collect(),
            }
        })
        .collect();

    Schema {
        id: num(root, "id"),
        version: num(root, "version"),
        package: attr(root, "package").to_owned(),
        byte_order: attr(root, "byteOrder").to_owned(),
        header_type: root.attribute("headerType").unwrap_or("messageHeader").to_owned(),
        types,
        enums,
        composites,
        messages,
    }
}

// ------------------------------------------------------------------------------------------------
// The Rust side
// ------------------------------------------------------------------------------------------------

/// How a Rust field type appears in the schema.
trait SchemaType {
    /// The name of the schema type the field `field` (its Rust name) must have. Named Rust types
    /// map to one schema type each; raw integers and byte arrays, whose Rust type does not say
    /// what they hold, map by field name.
    fn xml_name(field: &str) -> String;
    /// Its primitive type (`primitiveType` or `encodingType`).
    fn primitive() -> &'static str;
}

macro_rules! named_types {
    ($($ty:ident => $primitive:literal),+ $(,)?) => {
        $(impl SchemaType for $ty {
            fn xml_name(_field: &str) -> String {
                stringify!($ty).to_owned()
            }
            fn primitive() -> &'static str {
                $primitive
            }
        })+
    };
}

named_types!(
    UserId => "uint64",
    OrderId => "uint64",
    ClientOrderId => "uint64",
    MarketId => "uint32",
    AssetId => "uint32",
    Ticks => "uint64",
    Lots => "uint64",
    Amount => "uint64",
    Sequence => "uint64",
    TimestampNs => "uint64",
    TradeId => "uint64",
    OrderCount => "uint32",
    Shares => "uint64",
);

macro_rules! enum_types {
    ($($enum:ident => $code:ident),+ $(,)?) => {
        $(impl SchemaType for $code {
            fn xml_name(_field: &str) -> String {
                <$enum as WireEnum>::NAME.to_owned()
            }
            fn primitive() -> &'static str {
                match size_of::<$code>() {
                    1 => "uint8",
                    2 => "uint16",
                    n => panic!("{}: unexpected code width {n}", stringify!($code)),
                }
            }
        })+
    };
}

for_each_enum!(enum_types);

impl<const N: usize> SchemaType for Reserved<N> {
    fn xml_name(_field: &str) -> String {
        format!("Reserved{N}")
    }
    fn primitive() -> &'static str {
        "uint8"
    }
}

/// Byte arrays (`PublicKey`, `Nonce` and `Signature` are aliases of `FixedBytes<N>`); the size
/// check against the XML type's `length` catches a wrong `N`.
impl<const N: usize> SchemaType for FixedBytes<N> {
    fn xml_name(field: &str) -> String {
        match field {
            "api_key" => "PublicKey",
            "server_nonce" => "Nonce",
            "signature" => "Signature",
            other => panic!("byte-array field {other}: no schema type known; add it here"),
        }
        .to_owned()
    }
    fn primitive() -> &'static str {
        "uint8"
    }
}

/// Raw 16-bit integer fields.
impl SchemaType for U16 {
    fn xml_name(field: &str) -> String {
        match field {
            "command_template_id" | "ref_template_id" => "TemplateId",
            other => panic!("raw uint16 field {other}: no schema type known; add it here"),
        }
        .to_owned()
    }
    fn primitive() -> &'static str {
        "uint16"
    }
}

/// Raw 32-bit integer fields.
impl SchemaType for U32 {
    fn xml_name(field: &str) -> String {
        match field {
            "keep_alive_ms" => "KeepAliveMs",
            "count" => "MessageCount",
            other => panic!("raw uint32 field {other}: no schema type known; add it here"),
        }
        .to_owned()
    }
    fn primitive() -> &'static str {
        "uint32"
    }
}

#[derive(Debug)]
struct RustField {
    name: &'static str,
    offset: usize,
    size: usize,
    xml_type: String,
    primitive: &'static str,
}

fn rust_field<M, F: SchemaType>(name: &'static str, offset: usize, _access: impl Fn(&M) -> &F) -> RustField {
    RustField { name, offset, size: size_of::<F>(), xml_type: F::xml_name(name), primitive: F::primitive() }
}

#[derive(Debug)]
struct RustMessage {
    name: &'static str,
    type_name: &'static str,
    direction: &'static str,
    template_id: u16,
    block_length: u16,
    size: usize,
    fields: Vec<RustField>,
    /// `name()` of the envelope that decodes this template id, if it does.
    decodes_as: Option<&'static str>,
}

/// Decodes a header for `template_id` followed by a zero block, through `Command`, `Event` or
/// `Session`.
fn decode_zeroed(direction: &str, template_id: u16) -> Result<&'static str, DecodeError> {
    let mut bytes = [0u8; MESSAGE_HEADER_BYTES + 255];
    bytes[..MESSAGE_HEADER_BYTES].copy_from_slice(zerocopy::IntoBytes::as_bytes(&MessageHeader::new(template_id, 255)));
    match direction {
        "Command" => Command::decode(&bytes).map(|(m, _)| m.name()),
        "Event" => Event::decode(&bytes).map(|(m, _)| m.name()),
        "Session" => Session::decode(&bytes).map(|(m, _)| m.name()),
        other => panic!("unknown direction {other}"),
    }
}

macro_rules! rust_messages {
    ($($msg:ident => $envelope:ident { $($field:ident),+ $(,)? }),+ $(,)?) => {
        vec![$(RustMessage {
            name: <$msg as Message>::NAME,
            type_name: stringify!($msg),
            direction: stringify!($envelope),
            template_id: <$msg as Message>::TEMPLATE_ID,
            block_length: <$msg as Message>::BLOCK_LENGTH,
            size: size_of::<$msg>(),
            fields: vec![$(rust_field(
                stringify!($field),
                offset_of!($msg, $field),
                |m: &$msg| &m.$field,
            )),+],
            decodes_as: decode_zeroed(stringify!($envelope), <$msg as Message>::TEMPLATE_ID).ok(),
        }),+]
    };
}

fn rust_messages() -> Vec<RustMessage> {
    for_each_message!(rust_messages)
}

#[derive(Debug)]
struct RustEnum {
    name: &'static str,
    type_name: &'static str,
    code_bytes: usize,
    values: Vec<(String, u16)>,
}

macro_rules! rust_enums {
    ($($enum:ident => $code:ident),+ $(,)?) => {
        vec![$(RustEnum {
            name: <$enum as WireEnum>::NAME,
            type_name: stringify!($enum),
            code_bytes: size_of::<$code>(),
            values: <$enum as WireEnum>::ALL.iter().map(|v| (format!("{v:?}"), v.code())).collect(),
        }),+]
    };
}

fn rust_enums() -> Vec<RustEnum> {
    for_each_enum!(rust_enums)
}

/// `snake_case` → `camelCase`.
fn camel_case(snake: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Asserts that `(offset, size)` spans cover `0..len` exactly once, in order.
fn assert_tiles(what: &str, spans: &[(usize, usize)], len: usize) {
    let mut next = 0;
    for &(offset, size) in spans {
        assert!(offset >= next, "{what}: field at {offset} overlaps the previous one (ends at {next})");
        assert_eq!(offset, next, "{what}: gap of {} bytes at {next}", offset - next);
        assert!(size > 0, "{what}: empty field at {offset}");
        next = offset + size;
    }
    assert_eq!(next, len, "{what}: fields end at {next}, block is {len} bytes");
}

// ------------------------------------------------------------------------------------------------
// Tests
// ------------------------------------------------------------------------------------------------

#[test]
fn schema_identity_matches_the_crate() {
    let schema = parse(&schema_text());
    assert_eq!(schema.id, SCHEMA_ID, "schema id");
    assert_eq!(schema.version, SCHEMA_VERSION, "schema version");
    assert_eq!(schema.package, "exchange");
    assert_eq!(schema.byte_order, "littleEndian");
    assert_eq!(schema.header_type, "messageHeader");
}

#[test]
fn message_header_matches() {
    let schema = parse(&schema_text());
    let header = &schema.composites[&schema.header_type];
    let rust = [
        ("blockLength", offset_of!(MessageHeader, block_length)),
        ("templateId", offset_of!(MessageHeader, template_id)),
        ("schemaId", offset_of!(MessageHeader, schema_id)),
        ("version", offset_of!(MessageHeader, version)),
    ];
    assert_eq!(header.len(), rust.len(), "messageHeader members: {header:?}");
    for ((name, primitive, offset, size), (rust_name, rust_offset)) in header.iter().zip(rust) {
        assert_eq!(name, rust_name);
        assert_eq!(primitive, "uint16", "{name}");
        assert_eq!(*size, size_of::<U16>(), "{name}");
        assert_eq!(*offset, rust_offset, "{name}");
    }
    let spans: Vec<_> = header.iter().map(|m| (m.2, m.3)).collect();
    assert_tiles("messageHeader", &spans, MESSAGE_HEADER_BYTES);
    assert_eq!(schema.types[&schema.header_type].size, size_of::<MessageHeader>());
}

#[test]
fn every_message_matches_the_rust_layout() {
    let schema = parse(&schema_text());
    let rust = rust_messages();

    let xml_names: BTreeSet<_> = schema.messages.iter().map(|m| m.name.as_str()).collect();
    let rust_names: BTreeSet<_> = rust.iter().map(|m| m.name).collect();
    assert_eq!(xml_names, rust_names, "the XML and Rust define different messages");
    assert_eq!(xml_names.len(), schema.messages.len(), "a message is defined twice in the XML");
    let ids: BTreeSet<_> = schema.messages.iter().map(|m| m.id).collect();
    assert_eq!(ids.len(), schema.messages.len(), "template ids are not unique");

    for r in &rust {
        let x = schema.messages.iter().find(|x| x.name == r.name).unwrap();
        let what = r.name;
        assert_eq!(r.name, r.type_name, "Message::NAME of {}", r.type_name);
        assert_eq!(x.id, r.template_id, "{what}: template id");
        assert_eq!(x.block_length, usize::from(r.block_length), "{what}: blockLength");
        assert_eq!(r.size, usize::from(r.block_length), "{what}: size_of vs BLOCK_LENGTH");
        assert_eq!(r.decodes_as, Some(r.name), "{what}: {}::decode of its template id", r.direction);
        match r.direction {
            "Command" => assert!((1..=99).contains(&r.template_id), "{what}: command ids are 1-99"),
            "Event" => assert!((101..=199).contains(&r.template_id), "{what}: event ids are 101-199"),
            "Session" => assert!((200..=229).contains(&r.template_id), "{what}: session ids are 200-229"),
            other => panic!("{what}: unknown envelope {other}"),
        }

        let names: Vec<_> = x.fields.iter().map(|f| f.name.clone()).collect();
        let expected: Vec<_> = r.fields.iter().map(|f| camel_case(f.name)).collect();
        assert_eq!(names, expected, "{what}: field names and order");
        let field_ids: BTreeSet<_> = x.fields.iter().map(|f| f.id).collect();
        assert_eq!(field_ids.len(), x.fields.len(), "{what}: field ids are not unique");

        for (xf, rf) in x.fields.iter().zip(&r.fields) {
            let what = format!("{what}.{}", xf.name);
            let ty =
                schema.types.get(&xf.type_name).unwrap_or_else(|| panic!("{what}: unknown type {:?}", xf.type_name));
            assert_eq!(xf.type_name, rf.xml_type, "{what}: type");
            assert_eq!(ty.primitive, rf.primitive, "{what}: primitive type of {}", xf.type_name);
            assert_eq!(xf.offset, rf.offset, "{what}: offset");
            assert_eq!(ty.size, rf.size, "{what}: size");
        }

        let xml_spans: Vec<_> = x.fields.iter().map(|f| (f.offset, schema.types[&f.type_name].size)).collect();
        assert_tiles(&format!("{what} (XML)"), &xml_spans, x.block_length);
        let rust_spans: Vec<_> = r.fields.iter().map(|f| (f.offset, f.size)).collect();
        assert_tiles(&format!("{what} (Rust)"), &rust_spans, r.size);
    }
}

#[test]
fn the_message_list_is_every_template_the_decoders_know() {
    let listed: BTreeSet<_> = rust_messages().iter().map(|m| (m.direction, m.template_id)).collect();
    let mut known = BTreeSet::new();
    for direction in ["Command", "Event", "Session"] {
        for template_id in 0..=u16::MAX {
            match decode_zeroed(direction, template_id) {
                Ok(_) => {
                    known.insert((direction, template_id));
                }
                Err(DecodeError::UnknownTemplate(id)) => assert_eq!(id, template_id),
                Err(e) => panic!("{direction} template {template_id}: {e}"),
            }
        }
    }
    assert_eq!(listed, known);
}

#[test]
fn every_enum_matches_wire_enum_all() {
    let schema = parse(&schema_text());
    let rust = rust_enums();
    let xml_names: BTreeSet<_> = schema.enums.keys().map(String::as_str).collect();
    let rust_names: BTreeSet<_> = rust.iter().map(|e| e.name).collect();
    assert_eq!(xml_names, rust_names, "the XML and Rust define different enums");

    for r in &rust {
        let x = &schema.enums[r.name];
        assert_eq!(r.name, r.type_name, "WireEnum::NAME of {}", r.type_name);
        assert_eq!(primitive_size(&x.encoding), r.code_bytes, "{}: encodingType", r.name);
        assert!(x.encoding.starts_with("uint"), "{}: encodingType must be unsigned", r.name);
        assert_eq!(x.values, r.values, "{}: validValues (names and codes, in order)", r.name);
        let codes: BTreeSet<_> = x.values.iter().map(|v| v.1).collect();
        assert_eq!(codes.len(), x.values.len(), "{}: duplicate codes", r.name);
    }
}

#[test]
fn every_type_is_used_and_everything_is_described() {
    let text = schema_text();
    let schema = parse(&text);
    let used: BTreeSet<_> = schema
        .messages
        .iter()
        .flat_map(|m| m.fields.iter().map(|f| f.type_name.as_str()))
        .chain([schema.header_type.as_str()])
        .collect();
    let defined: BTreeSet<_> = schema.types.keys().map(String::as_str).collect();
    assert_eq!(defined, used, "types defined in the XML but used by no field");
    assert!(schema.types.values().all(|t| ["type", "enum", "composite"].contains(&t.kind.as_str())));

    let doc = Document::parse(&text).unwrap();
    for node in doc.descendants().filter(|n| n.is_element()) {
        let tag = node.tag_name().name();
        if ["messageSchema", "message", "field", "type", "enum", "validValue", "composite"].contains(&tag) {
            let description = node.attribute("description").unwrap_or_default();
            assert!(
                !description.trim().is_empty(),
                "<{tag} name={:?}> has no description",
                node.attribute("name").unwrap_or_default()
            );
        }
    }
}

#[test]
fn camel_case_maps_rust_fields() {
    assert_eq!(camel_case("user_id"), "userId");
    assert_eq!(camel_case("self_trade_prevention"), "selfTradePrevention");
    assert_eq!(camel_case("reserved"), "reserved");
}
