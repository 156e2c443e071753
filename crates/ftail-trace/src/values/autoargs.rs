//! `ftail record -a`: argument and return-value specs from DWARF.
//!
//! The specs are computed here, by `ftail record` before it starts the
//! program, rather than by the runtime: reading DWARF needs `gimli` and
//! free allocation, and the runtime depends on nothing but `libc` and
//! keeps its allocations to start-up. The rules go to the trace
//! directory's spec file like `-A`/`-R`'s, one per instrumented function
//! (matched by its entry address to a `DW_TAG_subprogram`'s `low_pc`,
//! so `foo.isra.0` gets its own parameters), with the enums' names for
//! the reader.
//!
//! Where a parameter is at the function's entry: the location list's
//! entry that covers `low_pc` (`DW_OP_regN`, or `DW_OP_entry_value` of
//! one); a location list with no entry there, or one that is not an
//! argument register, is *optimised out* (never a guess); a single
//! location in memory (`-O0`'s `DW_OP_fbreg`, valid only after the
//! prologue) means the parameter arrives where the SysV ABI puts it,
//! counted over the parameters before it; after a parameter the count
//! cannot follow (an aggregate the classification below gives up on)
//! the rest are optimised out.
//!
//! Aggregates (structs, unions, classes) passed or returned by value are
//! shown as uftrace shows them, by their type's name: `point{...}`; their
//! place in the list is kept, so no value ever shifts to another
//! parameter. For the count they are classified as the SysV ABI does:
//! up to 16 bytes in integer and SSE registers, eightbyte by eightbyte,
//! when enough are left (else on the stack); larger ones on the stack;
//! a C++ class that its debug info says is passed by reference (a
//! non-trivial copy or destructor) as a pointer in an integer register;
//! anything else (`long double` members, packed fields) ends the count.
//! A `std::string` is recorded as its characters.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use ftail_abi::argspec::{
    aggregate_line, class, enum_lines, ArgSpec, FnSpec, Ty, LOC_INT, LOC_NONE, LOC_STACK, LOC_XMM,
    MAX_STRING,
};
use gimli::{AttributeValue, EndianSlice, LittleEndian, UnitOffset};
use object::{Object, ObjectSection};

type R<'a> = EndianSlice<'a, LittleEndian>;

/// The spec file's lines (`ftail_abi::argspec`) for every instrumented
/// function of the executable at `path` that its debug info describes.
///
/// Enums and aggregates are numbered after those of `before` (so that
/// the rules of several modules share one spec file); `before` comes
/// back counting this module's too.
///
/// # Errors
///
/// When the file cannot be read or is not an ELF file.
pub fn specs(path: &Path, before: &mut Numbers) -> Result<Vec<String>, String> {
    let data = crate::untrusted::files::read_regular(path, crate::untrusted::files::MODULE_LIMIT)
        .map_err(|e| e.to_string())?;
    let file = object::File::parse(&*data).map_err(|e| e.to_string())?;
    let funcs = crate::sites::read(&data).map_err(|e| format!("{e:?}"))?;
    let load = |id: gimli::SectionId| -> Result<Cow<[u8]>, gimli::Error> {
        Ok(file
            .section_by_name(id.name())
            .and_then(|s| s.uncompressed_data().ok())
            .unwrap_or(Cow::Borrowed(&[])))
    };
    let owned = gimli::DwarfSections::load(load).map_err(|e: gimli::Error| e.to_string())?;
    let dwarf = owned.borrow(|s| EndianSlice::new(s, LittleEndian));
    let mut found = Found {
        before: *before,
        ..Found::default()
    };
    let mut units = dwarf.units();
    while let Ok(Some(header)) = units.next() {
        let Ok(unit) = dwarf.unit(header) else {
            continue;
        };
        let _ = walk(&dwarf, &unit, &mut found);
    }
    before.enums += found.enums.len() as u16;
    before.aggregates += found.aggregates.len() as u16;
    let mut lines = found.enum_lines;
    for f in &funcs {
        if let Some(spec) = found.specs.get(&f.start) {
            if spec.nargs > 0 || spec.has_ret != 0 {
                lines.push(spec.to_line(&f.name));
            }
        }
    }
    Ok(lines)
}

/// Enums and aggregates numbered so far (by the modules read before).
#[derive(Clone, Copy, Debug, Default)]
pub struct Numbers {
    /// Enums.
    pub enums: u16,
    /// Aggregates' names.
    pub aggregates: u16,
}

#[derive(Default)]
struct Found {
    specs: HashMap<u64, FnSpec>,
    /// Enum numbers by (unit offset, DIE offset).
    enums: HashMap<(usize, usize), u16>,
    /// Aggregate numbers by name.
    aggregates: HashMap<String, u16>,
    enum_lines: Vec<String>,
    /// Numbered by modules read before this one.
    before: Numbers,
}

/// What a type is, for recording.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Int(Ty),
    Float(Ty),
    /// A struct, union or class: its number (for its name), and how the
    /// ABI passes it.
    Aggregate {
        number: u16,
        pass: Pass,
        std_string: bool,
    },
    /// Anything else (`long double`, `_Complex`, an array).
    Other {
        size: u64,
    },
}

/// How the SysV ABI passes an aggregate.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Pass {
    /// In this many integer and SSE registers (when there are enough
    /// left; else on the stack, in as many 8-byte slots as registers).
    Registers { ints: u8, sses: u8 },
    /// On the stack, in this many 8-byte slots (returned through a
    /// hidden pointer).
    Memory { slots: u8 },
    /// Its address, in an integer register (a C++ class whose copy or
    /// destructor is not trivial).
    Reference,
    /// Not known here: the count stops.
    Unknown { size: u64 },
}

fn walk(dwarf: &gimli::Dwarf<R>, unit: &gimli::Unit<R>, found: &mut Found) -> gimli::Result<()> {
    let mut entries = unit.entries();
    while let Some((_, die)) = entries.next_dfs()? {
        if die.tag() != gimli::DW_TAG_subprogram {
            continue;
        }
        // Where it starts: its low_pc, or with a cold part the start of
        // each of its ranges (the site tables name the hot one).
        let mut starts = Vec::new();
        match die.attr_value(gimli::DW_AT_low_pc)? {
            // An address, or an index into .debug_addr (DWARF 5, clang).
            Some(low) => starts.extend(dwarf.attr_address(unit, low)?),
            None if die.attr_value(gimli::DW_AT_ranges)?.is_some() => {
                let mut ranges = dwarf.die_ranges(unit, die)?;
                while let Some(r) = ranges.next()? {
                    starts.push(r.begin);
                }
            }
            None => {}
        }
        for low in starts {
            let spec = function(dwarf, unit, die.offset(), low, found)?;
            found.specs.entry(low).or_insert(spec);
        }
    }
    Ok(())
}

/// The DIE's attribute, or its abstract origin's or specification's.
fn attr<'a>(
    unit: &gimli::Unit<R<'a>>,
    at: UnitOffset,
    name: gimli::DwAt,
) -> gimli::Result<Option<AttributeValue<R<'a>>>> {
    let mut at = at;
    for _ in 0..4 {
        let die = unit.entry(at)?;
        if let Some(v) = die.attr_value(name)? {
            return Ok(Some(v));
        }
        match die
            .attr_value(gimli::DW_AT_abstract_origin)?
            .or(die.attr_value(gimli::DW_AT_specification)?)
        {
            Some(AttributeValue::UnitRef(o)) => at = o,
            _ => return Ok(None),
        }
    }
    Ok(None)
}

fn function(
    dwarf: &gimli::Dwarf<R>,
    unit: &gimli::Unit<R>,
    at: UnitOffset,
    low: u64,
    found: &mut Found,
) -> gimli::Result<FnSpec> {
    let mut spec = FnSpec::default();
    let ret = match attr(unit, at, gimli::DW_AT_type)? {
        Some(AttributeValue::UnitRef(t)) => Some(kind(dwarf, unit, t, found)?),
        _ => None,
    };
    let mut ints = 0u8;
    let mut sses = 0u8;
    let mut stack = 0u8;
    match ret {
        Some(Kind::Int(ty)) => {
            spec.has_ret = 1;
            spec.ret = ArgSpec {
                ty,
                loc: LOC_INT,
                aux: if matches!(ty.class(), class::STRING | class::STD_STRING) {
                    MAX_STRING
                } else {
                    aux_of(ty, unit, at, found)?
                },
            };
        }
        Some(Kind::Float(ty)) => {
            spec.has_ret = 1;
            spec.ret = ArgSpec {
                ty,
                loc: LOC_XMM,
                aux: 0,
            };
        }
        Some(Kind::Aggregate {
            number,
            pass,
            std_string,
        }) => {
            spec.has_ret = 1;
            spec.ret = aggregate_spec(number, std_string, LOC_INT);
            // Returned in memory: its address is the hidden first
            // argument (and comes back in rax).
            match pass {
                Pass::Memory { .. } | Pass::Reference => ints = 1,
                Pass::Unknown { size } if size > 16 => ints = 1,
                _ => {}
            }
        }
        Some(Kind::Other { size }) if size > 16 => ints = 1,
        _ => {}
    }
    let mut abi_known = true;
    let mut tree = unit.entries_tree(Some(at))?;
    let root = tree.root()?;
    let mut children = root.children();
    while let Some(child) = children.next()? {
        let die = child.entry();
        if die.tag() != gimli::DW_TAG_formal_parameter {
            continue;
        }
        let off = die.offset();
        let k = match attr(unit, off, gimli::DW_AT_type)? {
            Some(AttributeValue::UnitRef(t)) => kind(dwarf, unit, t, found)?,
            _ => Kind::Other { size: 0 },
        };
        // Where the ABI puts it, counted over the parameters before.
        let abi = match k {
            Kind::Int(_)
            | Kind::Aggregate {
                pass: Pass::Reference,
                ..
            } if ints < 6 => {
                ints += 1;
                Some(LOC_INT + ints - 1)
            }
            Kind::Float(_) if sses < 8 => {
                sses += 1;
                Some(LOC_XMM + sses - 1)
            }
            Kind::Int(_)
            | Kind::Float(_)
            | Kind::Aggregate {
                pass: Pass::Reference,
                ..
            } => {
                stack += 1;
                Some(LOC_STACK + stack - 1)
            }
            Kind::Aggregate {
                pass: Pass::Registers { ints: i, sses: x },
                ..
            } => {
                if ints + i <= 6 && sses + x <= 8 {
                    ints += i;
                    sses += x;
                } else {
                    stack += i + x;
                }
                None
            }
            Kind::Aggregate {
                pass: Pass::Memory { slots },
                ..
            } => {
                stack = stack.saturating_add(slots);
                None
            }
            Kind::Aggregate {
                pass: Pass::Unknown { .. },
                ..
            }
            | Kind::Other { .. } => {
                abi_known = false;
                None
            }
        };
        let loc = match die.attr_value(gimli::DW_AT_location)? {
            None => LOC_NONE,
            Some(AttributeValue::Exprloc(e)) => match register(e, unit)? {
                Where::Reg(l) => l,
                Where::Memory if abi_known => abi.unwrap_or(LOC_NONE),
                _ => LOC_NONE,
            },
            // A location list (an offset, or DWARF 5's index).
            Some(v) => match dwarf.attr_locations_offset(unit, v)? {
                Some(o) => listed(dwarf, unit, o, low)?,
                None => LOC_NONE,
            },
        };
        let a = match k {
            Kind::Int(ty) if matches!(ty.class(), class::STRING | class::STD_STRING) => ArgSpec {
                ty,
                loc,
                aux: MAX_STRING,
            },
            Kind::Int(ty) => ArgSpec {
                ty,
                loc,
                aux: aux_of(ty, unit, off, found)?,
            },
            Kind::Float(ty) => ArgSpec { ty, loc, aux: 0 },
            Kind::Aggregate {
                number,
                pass,
                std_string,
            } => aggregate_spec(number, std_string && pass == Pass::Reference, loc),
            // Not shown, as uftrace does not, and never in another's place:
            // the count of the parameters after it stopped.
            Kind::Other { .. } => continue,
        };
        if !spec.push(a) {
            break;
        }
    }
    Ok(spec)
}

/// An aggregate's value: a `std::string` passed by its address (at
/// `loc`) as its characters, any other by its name.
fn aggregate_spec(number: u16, std_string: bool, loc: u8) -> ArgSpec {
    if std_string {
        ArgSpec {
            ty: Ty::new(class::STD_STRING, 8),
            loc,
            aux: MAX_STRING,
        }
    } else {
        ArgSpec {
            ty: Ty::new(class::AGGREGATE, 8),
            loc: LOC_NONE,
            aux: number,
        }
    }
}

/// An enum's number for a value of type `ty` declared at `at`.
fn aux_of(ty: Ty, unit: &gimli::Unit<R>, at: UnitOffset, found: &mut Found) -> gimli::Result<u16> {
    if ty.class() != class::ENUM {
        return Ok(0);
    }
    let Some(AttributeValue::UnitRef(t)) = attr(unit, at, gimli::DW_AT_type)? else {
        return Ok(0);
    };
    let t = strip(unit, t)?;
    let key = (unit_key(unit), t.0);
    Ok(found.enums.get(&key).copied().unwrap_or(0))
}

fn unit_key(unit: &gimli::Unit<R>) -> usize {
    match unit.header.offset() {
        gimli::UnitSectionOffset::DebugInfoOffset(o) => o.0,
        gimli::UnitSectionOffset::DebugTypesOffset(o) => o.0 | (1 << 62),
    }
}

/// Follows typedefs and qualifiers.
fn strip(unit: &gimli::Unit<R>, mut t: UnitOffset) -> gimli::Result<UnitOffset> {
    for _ in 0..16 {
        let die = unit.entry(t)?;
        match die.tag() {
            gimli::DW_TAG_typedef
            | gimli::DW_TAG_const_type
            | gimli::DW_TAG_volatile_type
            | gimli::DW_TAG_restrict_type
            | gimli::DW_TAG_atomic_type => match die.attr_value(gimli::DW_AT_type)? {
                Some(AttributeValue::UnitRef(n)) => t = n,
                _ => return Ok(t),
            },
            _ => return Ok(t),
        }
    }
    Ok(t)
}

fn kind(
    dwarf: &gimli::Dwarf<R>,
    unit: &gimli::Unit<R>,
    t: UnitOffset,
    found: &mut Found,
) -> gimli::Result<Kind> {
    let t0 = t;
    let t = strip(unit, t)?;
    let die = unit.entry(t)?;
    let size = die
        .attr_value(gimli::DW_AT_byte_size)?
        .and_then(|v| v.udata_value())
        .unwrap_or(0);
    let sized = |c: u8| match size {
        1 | 2 | 4 | 8 => Kind::Int(Ty::new(c, size as u8)),
        _ => Kind::Other { size },
    };
    Ok(match die.tag() {
        gimli::DW_TAG_base_type => {
            let enc = match die.attr_value(gimli::DW_AT_encoding)? {
                Some(AttributeValue::Encoding(e)) => e,
                _ => return Ok(Kind::Other { size }),
            };
            match enc {
                gimli::DW_ATE_boolean => Kind::Int(Ty::new(class::BOOL, 1)),
                gimli::DW_ATE_float if size == 4 || size == 8 => {
                    Kind::Float(Ty::new(class::FLOAT, size as u8))
                }
                gimli::DW_ATE_signed_char | gimli::DW_ATE_unsigned_char if size == 1 => {
                    Kind::Int(Ty::new(class::CHAR, 1))
                }
                gimli::DW_ATE_signed => sized(class::SIGNED),
                gimli::DW_ATE_unsigned | gimli::DW_ATE_UTF => sized(class::UNSIGNED),
                _ => Kind::Other { size },
            }
        }
        gimli::DW_TAG_pointer_type => {
            let chars = match die.attr_value(gimli::DW_AT_type)? {
                Some(AttributeValue::UnitRef(p)) => {
                    let p = unit.entry(strip(unit, p)?)?;
                    p.tag() == gimli::DW_TAG_base_type
                        && matches!(
                            p.attr_value(gimli::DW_AT_encoding)?,
                            Some(AttributeValue::Encoding(
                                gimli::DW_ATE_signed_char | gimli::DW_ATE_unsigned_char
                            ))
                        )
                }
                _ => false,
            };
            Kind::Int(Ty::new(
                if chars { class::STRING } else { class::POINTER },
                8,
            ))
        }
        gimli::DW_TAG_reference_type | gimli::DW_TAG_rvalue_reference_type => Kind::Int(Ty::new(
            if refers_to_std_string(dwarf, unit, &die)? {
                class::STD_STRING
            } else {
                class::POINTER
            },
            8,
        )),
        gimli::DW_TAG_structure_type | gimli::DW_TAG_class_type | gimli::DW_TAG_union_type => {
            let name = match die.attr_value(gimli::DW_AT_name)? {
                Some(v) => name_of(dwarf, unit, v),
                None => None,
            }
            .or(typedef_name(dwarf, unit, t0)?)
            .unwrap_or_else(|| "struct".into());
            let std_string = name.starts_with("basic_string<char,");
            let next = found.before.aggregates + found.aggregates.len() as u16 + 1;
            let number = *found.aggregates.entry(name.clone()).or_insert_with(|| {
                found.enum_lines.push(aggregate_line(next, &name));
                next
            });
            Kind::Aggregate {
                number,
                pass: if std_string {
                    Pass::Reference
                } else {
                    pass(unit, t, size)?
                },
                std_string,
            }
        }
        gimli::DW_TAG_enumeration_type => {
            let key = (unit_key(unit), t.0);
            if !found.enums.contains_key(&key) {
                let n = found.before.enums + found.enums.len() as u16 + 1;
                found.enums.insert(key, n);
                let name = match die.attr_value(gimli::DW_AT_name)? {
                    Some(v) => name_of(dwarf, unit, v).unwrap_or_else(|| format!("enum{n}")),
                    None => format!("enum{n}"),
                };
                let mut values = Vec::new();
                let mut tree = unit.entries_tree(Some(t))?;
                let mut c = tree.root()?.children();
                while let Some(e) = c.next()? {
                    let e = e.entry();
                    if e.tag() != gimli::DW_TAG_enumerator {
                        continue;
                    }
                    let v = match e.attr_value(gimli::DW_AT_const_value)? {
                        Some(AttributeValue::Sdata(v)) => v,
                        Some(AttributeValue::Udata(v)) => v as i64,
                        Some(AttributeValue::Data1(v)) => i64::from(v),
                        Some(AttributeValue::Data2(v)) => i64::from(v),
                        Some(AttributeValue::Data4(v)) => i64::from(v),
                        Some(AttributeValue::Data8(v)) => v as i64,
                        _ => continue,
                    };
                    if let Some(name) = e.attr(gimli::DW_AT_name)? {
                        if let Some(s) = name_of(dwarf, unit, name.value()) {
                            values.push((v, s));
                        }
                    }
                }
                found.enum_lines.extend(enum_lines(n, &name, &values));
            }
            sized(class::ENUM)
        }
        _ => Kind::Other { size },
    })
}

/// Whether the reference `die` is to a `std::string`.
fn refers_to_std_string(
    dwarf: &gimli::Dwarf<R>,
    unit: &gimli::Unit<R>,
    die: &gimli::DebuggingInformationEntry<R>,
) -> gimli::Result<bool> {
    let Some(AttributeValue::UnitRef(t)) = die.attr_value(gimli::DW_AT_type)? else {
        return Ok(false);
    };
    let target = unit.entry(strip(unit, t)?)?;
    Ok(match target.attr_value(gimli::DW_AT_name)? {
        Some(v) => name_of(dwarf, unit, v).is_some_and(|n| n.starts_with("basic_string<char,")),
        None => false,
    })
}

/// The name of the first typedef on the way from `t` to its type (an
/// anonymous struct's name).
fn typedef_name(
    dwarf: &gimli::Dwarf<R>,
    unit: &gimli::Unit<R>,
    mut t: UnitOffset,
) -> gimli::Result<Option<String>> {
    for _ in 0..16 {
        let die = unit.entry(t)?;
        if die.tag() == gimli::DW_TAG_typedef {
            if let Some(v) = die.attr_value(gimli::DW_AT_name)? {
                return Ok(name_of(dwarf, unit, v));
            }
        }
        match die.attr_value(gimli::DW_AT_type)? {
            Some(AttributeValue::UnitRef(n)) => t = n,
            _ => break,
        }
    }
    Ok(None)
}

/// How the SysV ABI passes the aggregate at `t` of `size` bytes.
fn pass(unit: &gimli::Unit<R>, t: UnitOffset, size: u64) -> gimli::Result<Pass> {
    let die = unit.entry(t)?;
    // DW_CC_pass_by_reference: gcc and clang say so of C++ classes that
    // must be copied through their constructor.
    let by_reference = match die.attr_value(gimli::DW_AT_calling_convention)? {
        Some(AttributeValue::CallingConvention(cc)) => cc == gimli::DW_CC_pass_by_reference,
        Some(v) => v.udata_value() == Some(u64::from(gimli::DW_CC_pass_by_reference.0)),
        None => false,
    };
    if by_reference {
        return Ok(Pass::Reference);
    }
    let unknown = Pass::Unknown { size };
    if size == 0 || die.attr_value(gimli::DW_AT_declaration)?.is_some() {
        return Ok(unknown);
    }
    let mut eights = vec![Eight::Padding; size.div_ceil(8).min(64) as usize];
    if !classify(unit, t, 0, &mut eights, 0)? {
        return Ok(unknown);
    }
    if size > 16 {
        return Ok(Pass::Memory {
            slots: size.div_ceil(8).min(255) as u8,
        });
    }
    let count = |e: Eight| eights.iter().filter(|&&x| x == e).count() as u8;
    if count(Eight::Padding) > 0 {
        return Ok(unknown);
    }
    Ok(Pass::Registers {
        ints: count(Eight::Int),
        sses: count(Eight::Sse),
    })
}

/// The class of an eightbyte of an aggregate.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Eight {
    Padding,
    Int,
    Sse,
}

/// Classifies the scalars of the type at `t`, placed at byte `at` of the
/// aggregate, into `eights`; false where the ABI's rules are not
/// followed here (`long double`, misaligned or unknown members).
fn classify(
    unit: &gimli::Unit<R>,
    t: UnitOffset,
    at: u64,
    eights: &mut [Eight],
    depth: u32,
) -> gimli::Result<bool> {
    if depth > 8 {
        return Ok(false);
    }
    let t = strip(unit, t)?;
    let die = unit.entry(t)?;
    let size = die
        .attr_value(gimli::DW_AT_byte_size)?
        .and_then(|v| v.udata_value())
        .unwrap_or(0);
    let mut scalar = |class: Eight, size: u64| -> bool {
        if !matches!(size, 1 | 2 | 4 | 8) || !at.is_multiple_of(size) {
            return false;
        }
        let Some(e) = eights.get_mut((at / 8) as usize) else {
            return false;
        };
        if *e != Eight::Int {
            *e = class;
        }
        true
    };
    Ok(match die.tag() {
        gimli::DW_TAG_base_type => match die.attr_value(gimli::DW_AT_encoding)? {
            Some(AttributeValue::Encoding(gimli::DW_ATE_float)) if size <= 8 => {
                scalar(Eight::Sse, size)
            }
            Some(AttributeValue::Encoding(
                gimli::DW_ATE_signed
                | gimli::DW_ATE_unsigned
                | gimli::DW_ATE_signed_char
                | gimli::DW_ATE_unsigned_char
                | gimli::DW_ATE_boolean
                | gimli::DW_ATE_UTF,
            )) => scalar(Eight::Int, size),
            _ => false,
        },
        gimli::DW_TAG_pointer_type
        | gimli::DW_TAG_reference_type
        | gimli::DW_TAG_rvalue_reference_type
        | gimli::DW_TAG_ptr_to_member_type => scalar(Eight::Int, 8),
        gimli::DW_TAG_enumeration_type => scalar(Eight::Int, size),
        gimli::DW_TAG_structure_type | gimli::DW_TAG_class_type | gimli::DW_TAG_union_type => {
            let mut tree = unit.entries_tree(Some(t))?;
            let mut c = tree.root()?.children();
            while let Some(m) = c.next()? {
                let m = m.entry();
                // A C++ class with member functions may have a copy
                // constructor or destructor that makes it passed by
                // reference, which gcc does not always say.
                if m.tag() == gimli::DW_TAG_subprogram {
                    return Ok(false);
                }
                if !matches!(m.tag(), gimli::DW_TAG_member | gimli::DW_TAG_inheritance)
                    || m.attr_value(gimli::DW_AT_declaration)?.is_some()
                    || m.attr_value(gimli::DW_AT_external)?.is_some()
                {
                    continue;
                }
                if m.attr_value(gimli::DW_AT_bit_size)?.is_some() {
                    return Ok(false);
                }
                let off = match m.attr_value(gimli::DW_AT_data_member_location)? {
                    Some(v) => match v.udata_value() {
                        Some(o) => o,
                        None => return Ok(false),
                    },
                    None if die.tag() == gimli::DW_TAG_union_type => 0,
                    None => return Ok(false),
                };
                let Some(AttributeValue::UnitRef(mt)) = m.attr_value(gimli::DW_AT_type)? else {
                    return Ok(false);
                };
                if !classify(unit, mt, at + off, eights, depth + 1)? {
                    return Ok(false);
                }
            }
            true
        }
        gimli::DW_TAG_array_type => {
            let Some(AttributeValue::UnitRef(et)) = die.attr_value(gimli::DW_AT_type)? else {
                return Ok(false);
            };
            let esize = unit
                .entry(strip(unit, et)?)?
                .attr_value(gimli::DW_AT_byte_size)?
                .and_then(|v| v.udata_value())
                .unwrap_or(0);
            if esize == 0 || size == 0 || size / esize > 64 {
                return Ok(size == 0);
            }
            for i in 0..size / esize {
                if !classify(unit, et, at + i * esize, eights, depth + 1)? {
                    return Ok(false);
                }
            }
            true
        }
        _ => false,
    })
}

fn name_of(dwarf: &gimli::Dwarf<R>, unit: &gimli::Unit<R>, v: AttributeValue<R>) -> Option<String> {
    let s = dwarf.attr_string(unit, v).ok()?;
    Some(s.to_string_lossy().into_owned())
}

enum Where {
    Reg(u8),
    Memory,
    Nowhere,
}

/// Maps a DWARF register number to an argument location.
fn arg_reg(r: u16) -> Option<u8> {
    Some(match r {
        5 => LOC_INT,
        4 => LOC_INT + 1,
        1 => LOC_INT + 2,
        2 => LOC_INT + 3,
        8 => LOC_INT + 4,
        9 => LOC_INT + 5,
        17..=24 => LOC_XMM + (r - 17) as u8,
        _ => return None,
    })
}

fn register(e: gimli::Expression<R>, unit: &gimli::Unit<R>) -> gimli::Result<Where> {
    let mut ops = e.operations(unit.encoding());
    Ok(match ops.next()? {
        Some(gimli::Operation::Register { register }) => match arg_reg(register.0) {
            Some(l) => Where::Reg(l),
            None => Where::Nowhere,
        },
        Some(gimli::Operation::EntryValue { expression }) => {
            let mut inner = gimli::Expression(expression).operations(unit.encoding());
            match inner.next()? {
                Some(gimli::Operation::Register { register }) => match arg_reg(register.0) {
                    Some(l) => Where::Reg(l),
                    None => Where::Nowhere,
                },
                _ => Where::Nowhere,
            }
        }
        Some(gimli::Operation::FrameOffset { .. })
        | Some(gimli::Operation::RegisterOffset { .. })
        | Some(gimli::Operation::Address { .. }) => Where::Memory,
        _ => Where::Nowhere,
    })
}

/// The location at `pc` from a location list: an argument register, or
/// optimised out.
fn listed(
    dwarf: &gimli::Dwarf<R>,
    unit: &gimli::Unit<R>,
    o: gimli::LocationListsOffset,
    pc: u64,
) -> gimli::Result<u8> {
    let mut locs = dwarf.locations(unit, o)?;
    while let Some(l) = locs.next()? {
        if l.range.begin <= pc && pc < l.range.end {
            return Ok(match register(l.data, unit)? {
                Where::Reg(r) => r,
                _ => LOC_NONE,
            });
        }
    }
    Ok(LOC_NONE)
}

/// The shared libraries the program at `path` loads at start-up, found as
/// the dynamic loader finds them (`DT_NEEDED`, searched in `DT_RPATH`
/// when there is no `DT_RUNPATH`, `LD_LIBRARY_PATH`, `DT_RUNPATH`, then
/// the default directories; `$ORIGIN` is the needing object's directory),
/// each once, in the order found. Libraries loaded later with `dlopen`
/// cannot be known here.
pub fn needed_libraries(path: &Path) -> Vec<std::path::PathBuf> {
    let mut found: Vec<std::path::PathBuf> = Vec::new();
    let mut todo = vec![path.to_path_buf()];
    while let Some(object) = todo.pop() {
        for lib in needed_by(&object) {
            if !found.contains(&lib) {
                found.push(lib.clone());
                todo.push(lib);
            }
        }
    }
    found
}

/// The libraries `path` itself names, resolved (those not found are left
/// out: the loader will say so when the program starts).
fn needed_by(path: &Path) -> Vec<std::path::PathBuf> {
    let Ok(data) =
        crate::untrusted::files::read_regular(path, crate::untrusted::files::MODULE_LIMIT)
    else {
        return Vec::new();
    };
    let Some(dynamic) = dynamic_strings(&data) else {
        return Vec::new();
    };
    let origin = path
        .parent()
        .and_then(|p| p.to_str())
        .unwrap_or(".")
        .to_string();
    let expand = |list: &str| -> Vec<String> {
        list.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| d.replace("${ORIGIN}", &origin).replace("$ORIGIN", &origin))
            .collect()
    };
    let mut dirs = Vec::new();
    if dynamic.runpath.is_none() {
        dirs.extend(dynamic.rpath.as_deref().map(expand).unwrap_or_default());
    }
    if let Ok(list) = std::env::var("LD_LIBRARY_PATH") {
        dirs.extend(expand(&list));
    }
    dirs.extend(dynamic.runpath.as_deref().map(expand).unwrap_or_default());
    dirs.extend(
        [
            "/lib/x86_64-linux-gnu",
            "/usr/lib/x86_64-linux-gnu",
            "/lib64",
            "/usr/lib64",
            "/lib",
            "/usr/lib",
            "/usr/local/lib",
        ]
        .map(String::from),
    );
    dynamic
        .needed
        .iter()
        .filter_map(|name| {
            if name.contains('/') {
                let p = std::path::PathBuf::from(name);
                return p.is_file().then_some(p);
            }
            dirs.iter()
                .map(|d| Path::new(d).join(name))
                .find(|p| p.is_file())
        })
        .collect()
}

/// What the dynamic section of an ELF file names.
struct DynamicStrings {
    needed: Vec<String>,
    rpath: Option<String>,
    runpath: Option<String>,
}

fn dynamic_strings(data: &[u8]) -> Option<DynamicStrings> {
    use object::elf::{FileHeader64, DT_NEEDED, DT_RPATH, DT_RUNPATH};
    use object::read::elf::{Dyn, FileHeader};
    let elf = FileHeader64::<object::Endianness>::parse(data).ok()?;
    let endian = elf.endian().ok()?;
    let sections = elf.sections(endian, data).ok()?;
    let (entries, strtab) = sections.dynamic(endian, data).ok()??;
    let strings = sections.strings(endian, data, strtab).ok()?;
    let mut out = DynamicStrings {
        needed: Vec::new(),
        rpath: None,
        runpath: None,
    };
    for d in entries {
        let text = || {
            d.string(endian, strings)
                .ok()
                .map(|s| String::from_utf8_lossy(s).into_owned())
        };
        match d.tag32(endian) {
            Some(DT_NEEDED) => out.needed.extend(text()),
            Some(DT_RPATH) => out.rpath = text(),
            Some(DT_RUNPATH) => out.runpath = text(),
            _ => {}
        }
    }
    Some(out)
}
