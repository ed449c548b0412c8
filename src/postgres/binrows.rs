//! COPY rows from text to PostgreSQL's binary COPY format, for tables whose columns all
//! have common built-in types: the server then loads them without parsing text (about
//! twice as fast for timestamps, numerics, floats, uuids and bytea). Only the exact text
//! that PostgreSQL's own output functions write (as pg_dump leaves it: `DateStyle` ISO,
//! `IntervalStyle` postgres) is converted; any other row is declined, and the caller hands
//! it to the server as text.

/// The binary COPY header: signature, flags, header extension length.
pub(crate) const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The binary COPY trailer: a field count of -1.
pub(crate) const TRAILER: &[u8] = &[0xff, 0xff];

/// How a column's text becomes its binary form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Bool,
    Int2,
    Int4,
    Int8,
    Oid,
    Float4,
    Float8,
    Numeric,
    /// text, varchar, bpchar, json and enum labels: the bytes themselves.
    Text,
    Jsonb,
    Bytea,
    Uuid,
    Date,
    Timestamp,
    TimestampTz,
    Time,
    Interval,
    /// inet (false) or cidr (true).
    Inet(bool),
    /// A one-dimensional array whose elements have the built-in type of this OID (one of
    /// the kinds above).
    Array(u32),
}

impl Kind {
    /// The conversion for a built-in type, by its OID (an enum's or a domain's base type
    /// is resolved by the caller). None: not converted (the table loads as text).
    pub(crate) fn of(type_oid: u32) -> Option<Kind> {
        Some(match type_oid {
            16 => Kind::Bool,
            17 => Kind::Bytea,
            20 => Kind::Int8,
            21 => Kind::Int2,
            23 => Kind::Int4,
            25 | 114 | 1042 | 1043 => Kind::Text,
            26 => Kind::Oid,
            700 => Kind::Float4,
            701 => Kind::Float8,
            1082 => Kind::Date,
            1114 => Kind::Timestamp,
            1184 => Kind::TimestampTz,
            1700 => Kind::Numeric,
            2950 => Kind::Uuid,
            3802 => Kind::Jsonb,
            1083 => Kind::Time,
            1186 => Kind::Interval,
            869 => Kind::Inet(false),
            650 => Kind::Inet(true),
            _ => Kind::Array(ARRAY_ELEMENTS.iter().find(|(a, _)| *a == type_oid)?.1),
        })
    }
}

/// Array types converted, each with its element type.
const ARRAY_ELEMENTS: [(u32, u32); 21] = [
    (1000, 16),
    (1005, 21),
    (1007, 23),
    (1016, 20),
    (1028, 26),
    (1021, 700),
    (1022, 701),
    (1231, 1700),
    (1009, 25),
    (1015, 1043),
    (1014, 1042),
    (199, 114),
    (3807, 3802),
    (2951, 2950),
    (1182, 1082),
    (1115, 1114),
    (1185, 1184),
    (1183, 1083),
    (1187, 1186),
    (1041, 869),
    (651, 650),
];

/// Converts whole rows of one table.
pub(crate) struct Rows {
    kinds: Vec<Kind>,
    field: Vec<u8>,
    /// An array's text, and one element's.
    array: Vec<u8>,
    element: Vec<u8>,
    /// The fields of the row being converted.
    spans: Vec<Span>,
}

/// A field of a row: where it starts and ends, and whether it holds a backslash.
#[derive(Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
    escaped: bool,
}

impl Rows {
    pub(crate) fn new(kinds: Vec<Kind>) -> Self {
        Rows {
            kinds,
            field: Vec::new(),
            array: Vec::new(),
            element: Vec::new(),
            spans: Vec::new(),
        }
    }

    /// Append every row of `batch` (COPY text, one row per line) to `out` in binary, in
    /// one pass over its bytes. A row it declines goes to `text` as it is, newline and
    /// all, and so does anything after the last newline. Returns how many rows (and
    /// pieces) went to `text`.
    pub(crate) fn rows(&mut self, batch: &[u8], out: &mut Vec<u8>, text: &mut Vec<u8>) -> u64 {
        let mut spans = std::mem::take(&mut self.spans);
        spans.clear();
        let (mut row, mut start, mut escaped, mut declined) = (0, 0, false, 0);
        for p in memchr::memchr3_iter(b'\t', b'\n', b'\\', batch) {
            match batch[p] {
                b'\\' => {
                    escaped = true;
                    continue;
                }
                b'\t' => {}
                _ => {
                    spans.push(Span {
                        start,
                        end: p,
                        escaped,
                    });
                    if !self.fields(batch, &spans, out) {
                        text.extend_from_slice(&batch[row..=p]);
                        declined += 1;
                    }
                    spans.clear();
                    (row, start, escaped) = (p + 1, p + 1, false);
                    continue;
                }
            }
            spans.push(Span {
                start,
                end: p,
                escaped,
            });
            (start, escaped) = (p + 1, false);
        }
        if row < batch.len() {
            text.extend_from_slice(&batch[row..]);
            declined += 1;
        }
        self.spans = spans;
        declined
    }

    /// Append the row made of `spans` of `src` to `out`; false, with `out` as it was,
    /// when it declines the row.
    fn fields(&mut self, src: &[u8], spans: &[Span], out: &mut Vec<u8>) -> bool {
        let start = out.len();
        if spans.len() != self.kinds.len() || self.fields_inner(src, spans, out).is_none() {
            out.truncate(start);
            return false;
        }
        true
    }

    fn fields_inner(&mut self, src: &[u8], spans: &[Span], out: &mut Vec<u8>) -> Option<()> {
        out.extend_from_slice(&(self.kinds.len() as i16).to_be_bytes());
        for (&kind, span) in self.kinds.iter().zip(spans) {
            let field = &src[span.start..span.end];
            if field == b"\\N" {
                out.extend_from_slice(&(-1i32).to_be_bytes());
                continue;
            }
            let len_at = out.len();
            out.extend_from_slice(&[0; 4]);
            match kind {
                Kind::Text | Kind::Jsonb => {
                    if kind == Kind::Jsonb {
                        out.push(1);
                    }
                    if span.escaped {
                        unescape(field, out)?;
                    } else {
                        out.extend_from_slice(field);
                    }
                }
                Kind::Bytea => bytea(field, out, &mut self.field)?,
                Kind::Array(elem) => {
                    self.array.clear();
                    if span.escaped {
                        unescape(field, &mut self.array)?;
                    } else {
                        self.array.extend_from_slice(field);
                    }
                    array(elem, &self.array, out, &mut self.element, &mut self.field)?;
                }
                _ => {
                    if span.escaped {
                        return None;
                    }
                    scalar(kind, field, out, &mut self.field)?;
                }
            }
            let len = i32::try_from(out.len() - len_at - 4).ok()?;
            out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
        }
        Some(())
    }
}

/// COPY text's escapes, exactly those PostgreSQL writes (`\\`, `\b`, `\f`, `\n`, `\r`,
/// `\t`, `\v`); any other (octal, hex, a backslash at the end) declines the row.
fn unescape(field: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let mut rest = field;
    while let Some(p) = memchr::memchr(b'\\', rest) {
        out.extend_from_slice(&rest[..p]);
        let c = *rest.get(p + 1)?;
        out.push(match c {
            b'\\' => b'\\',
            b'b' => 8,
            b'f' => 12,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'v' => 11,
            _ => return None,
        });
        rest = &rest[p + 2..];
    }
    out.extend_from_slice(rest);
    Some(())
}

/// bytea in its hex output form, `\x` and hex digit pairs, or in the escape form
/// (`bytea_output = escape`: `\\` for a backslash, `\ooo` for a byte outside printable
/// ASCII, other bytes as they are); in COPY text every backslash is doubled.
fn bytea(field: &[u8], out: &mut Vec<u8>, scratch: &mut Vec<u8>) -> Option<()> {
    let Some(hex) = field.strip_prefix(b"\\\\x") else {
        scratch.clear();
        unescape(field, scratch)?;
        let mut rest = &scratch[..];
        while let Some(p) = memchr::memchr(b'\\', rest) {
            out.extend_from_slice(&rest[..p]);
            if rest.get(p + 1) == Some(&b'\\') {
                out.push(b'\\');
                rest = &rest[p + 2..];
                continue;
            }
            match rest.get(p + 1..p + 4) {
                Some(&[a @ b'0'..=b'3', b @ b'0'..=b'7', c @ b'0'..=b'7']) => {
                    out.push((a - b'0') << 6 | (b - b'0') << 3 | (c - b'0'));
                }
                _ => return None,
            }
            rest = &rest[p + 4..];
        }
        out.extend_from_slice(rest);
        return Some(());
    };
    if hex.len() % 2 != 0 {
        return None;
    }
    let start = out.len();
    out.resize(start + hex.len() / 2, 0);
    // Branch-free over the whole value; a bad digit shows in `bad` at the end.
    let mut bad = 0u8;
    for (b, pair) in out[start..].iter_mut().zip(hex.chunks_exact(2)) {
        let (hi, lo) = (HEX[pair[0] as usize], HEX[pair[1] as usize]);
        bad |= hi | lo;
        *b = hi << 4 | lo;
    }
    (bad & 0x80 == 0).then_some(())
}

/// A hex digit's value, or 0xff.
static HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

fn scalar(kind: Kind, f: &[u8], out: &mut Vec<u8>, scratch: &mut Vec<u8>) -> Option<()> {
    match kind {
        Kind::Bool => out.push(match f {
            b"t" => 1,
            b"f" => 0,
            _ => return None,
        }),
        Kind::Int2 => out.extend_from_slice(&i16::try_from(int(f)?).ok()?.to_be_bytes()),
        Kind::Int4 => out.extend_from_slice(&i32::try_from(int(f)?).ok()?.to_be_bytes()),
        Kind::Int8 => out.extend_from_slice(&int(f)?.to_be_bytes()),
        Kind::Oid => {
            if f.first() == Some(&b'-') {
                return None;
            }
            out.extend_from_slice(&u32::try_from(int(f)?).ok()?.to_be_bytes())
        }
        // Rust's parsing is correctly rounded, as PostgreSQL's input is, and reads `NaN`
        // and the infinities as the same values.
        Kind::Float4 => {
            let v: f32 = float_text(f)?.parse().ok()?;
            out.extend_from_slice(&v.to_bits().to_be_bytes());
        }
        Kind::Float8 => {
            let v: f64 = float_text(f)?.parse().ok()?;
            out.extend_from_slice(&v.to_bits().to_be_bytes());
        }
        Kind::Numeric => numeric(f, out, scratch)?,
        Kind::Uuid => uuid(f, out)?,
        Kind::Date => {
            let days = match f {
                b"infinity" => i32::MAX,
                b"-infinity" => i32::MIN,
                _ => {
                    let (body, bc) = strip_bc(f);
                    let (days, rest) = date(body, bc)?;
                    if !rest.is_empty() {
                        return None;
                    }
                    i32::try_from(days).ok()?
                }
            };
            out.extend_from_slice(&days.to_be_bytes());
        }
        Kind::Timestamp | Kind::TimestampTz => {
            let us = match f {
                b"infinity" => i64::MAX,
                b"-infinity" => i64::MIN,
                _ => timestamp(f, kind == Kind::TimestampTz)?,
            };
            out.extend_from_slice(&us.to_be_bytes());
        }
        Kind::Time => out.extend_from_slice(&time(f)?.to_be_bytes()),
        Kind::Interval => interval(f, out, scratch)?,
        Kind::Inet(cidr) => inet(f, cidr, out)?,
        Kind::Text | Kind::Jsonb | Kind::Bytea | Kind::Array(_) => return None,
    }
    Some(())
}

/// One array element's binary form (its text unquoted).
fn element(kind: Kind, f: &[u8], out: &mut Vec<u8>, scratch: &mut Vec<u8>) -> Option<()> {
    match kind {
        Kind::Text => out.extend_from_slice(f),
        Kind::Jsonb => {
            out.push(1);
            out.extend_from_slice(f);
        }
        _ => scalar(kind, f, out, scratch)?,
    }
    Some(())
}

/// Whether `array_out` quotes an element of this text: empty, any case of `NULL`, or
/// holding a quote, a backslash, a brace, the comma or white space.
fn needs_quotes(e: &[u8]) -> bool {
    e.is_empty()
        || e.eq_ignore_ascii_case(b"NULL")
        || e.iter().any(|c| {
            matches!(
                c,
                b'"' | b'\\' | b'{' | b'}' | b',' | b' ' | b'\t' | b'\n' | b'\r' | 11 | 12
            )
        })
}

/// A one-dimensional array as `array_out` writes it (`{a,"b c",NULL}`, no bounds, quotes
/// exactly where it puts them); binary: dimensions, null flag, element type, length and
/// lower bound 1, then each element with its length (-1: NULL).
fn array(
    elem: u32,
    text: &[u8],
    out: &mut Vec<u8>,
    unquoted: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> Option<()> {
    let kind = Kind::of(elem)?;
    if matches!(kind, Kind::Array(_) | Kind::Bytea) {
        return None;
    }
    let body = text.strip_prefix(b"{")?.strip_suffix(b"}")?;
    let head = out.len();
    out.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
    out.extend_from_slice(&elem.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1]);
    if body.is_empty() {
        // No dimensions at all: `{}`.
        out.truncate(head);
        out.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&elem.to_be_bytes());
        return Some(());
    }
    let (mut rest, mut count, mut nulls) = (body, 0i32, false);
    loop {
        let len_at = out.len();
        out.extend_from_slice(&[0; 4]);
        let value = if let Some(q) = rest.strip_prefix(b"\"") {
            // Quoted: `\"` and `\\` stand for themselves; it must have needed the quotes.
            unquoted.clear();
            let mut i = 0;
            loop {
                match *q.get(i)? {
                    b'"' => break,
                    b'\\' => {
                        let c = *q.get(i + 1)?;
                        if c != b'"' && c != b'\\' {
                            return None;
                        }
                        unquoted.push(c);
                        i += 2;
                    }
                    c => {
                        unquoted.push(c);
                        i += 1;
                    }
                }
            }
            if !needs_quotes(unquoted) {
                return None;
            }
            rest = &q[i + 1..];
            Some(&unquoted[..])
        } else {
            let end = memchr::memchr(b',', rest).unwrap_or(rest.len());
            let e = &rest[..end];
            rest = &rest[end..];
            if e == b"NULL" {
                None
            } else if needs_quotes(e) {
                return None;
            } else {
                Some(e)
            }
        };
        match value {
            Some(v) => {
                element(kind, v, out, scratch)?;
                let len = i32::try_from(out.len() - len_at - 4).ok()?;
                out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
            }
            None => {
                nulls = true;
                out[len_at..len_at + 4].copy_from_slice(&(-1i32).to_be_bytes());
            }
        }
        count = count.checked_add(1)?;
        match rest.split_first() {
            None => break,
            Some((b',', r)) if !r.is_empty() => rest = r,
            _ => return None,
        }
    }
    out[head + 4..head + 8].copy_from_slice(&i32::from(nulls).to_be_bytes());
    out[head + 12..head + 16].copy_from_slice(&count.to_be_bytes());
    Some(())
}

const US_PER_HOUR: i64 = 3_600_000_000;

/// `v` in decimal, at least `width` digits.
fn push_num(out: &mut Vec<u8>, v: u64, width: usize) {
    let mut d = [0u8; 20];
    let (mut i, mut v) = (d.len(), v);
    loop {
        i -= 1;
        d[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 && d.len() - i >= width {
            break;
        }
    }
    out.extend_from_slice(&d[i..]);
}

/// Seconds as PostgreSQL writes them: two digits, then the microseconds as a fraction
/// without trailing zeros, if any.
fn push_seconds(out: &mut Vec<u8>, sec: u64, micros: u64) {
    push_num(out, sec, 2);
    if micros != 0 {
        out.push(b'.');
        let at = out.len();
        push_num(out, micros, 6);
        while out.len() > at && out.last() == Some(&b'0') {
            out.pop();
        }
    }
}

/// `.` and 1-6 digits, the last not 0 (or nothing): microseconds.
fn fraction(f: &[u8]) -> Option<i64> {
    if f.is_empty() {
        return Some(0);
    }
    let d = f.strip_prefix(b".")?;
    if d.is_empty() || d.len() > 6 || d.last() == Some(&b'0') {
        return None;
    }
    Some(digits(d)? * 10i64.pow(6 - d.len() as u32))
}

/// `HH:MM:SS[.ffffff]`, 00:00:00 to 24:00:00, as time_out writes it: microseconds since
/// midnight.
fn time(f: &[u8]) -> Option<i64> {
    if f.len() < 8 || f[2] != b':' || f[5] != b':' {
        return None;
    }
    let (h, m, s) = (digits(&f[..2])?, digits(&f[3..5])?, digits(&f[6..8])?);
    if m > 59 || s > 59 {
        return None;
    }
    let us = ((h * 60 + m) * 60 + s) * 1_000_000 + fraction(&f[8..])?;
    (us <= 24 * US_PER_HOUR).then_some(us)
}

/// An integer with an optional sign (`+` too: an interval's fields carry one).
fn signed(w: &[u8]) -> Option<i64> {
    match w.split_first() {
        Some((b'+', d)) if d.first() != Some(&b'-') => int(d),
        _ => int(w),
    }
}

/// An interval as `IntervalStyle` postgres writes it (`1 year -2 mons +3 days -04:05:06.5`):
/// binary: microseconds, days, months. The value read is written again the way
/// interval_out writes it (into `again`), and must come out as the same text.
fn interval(f: &[u8], out: &mut Vec<u8>, again: &mut Vec<u8>) -> Option<()> {
    let (mut months, mut days, mut us) = (0i32, 0i32, 0i64);
    let mut rest = f;
    while !rest.is_empty() {
        let Some(sp) = memchr::memchr(b' ', rest) else {
            // The time of day, last: [+-]H:MM:SS[.ffffff].
            let (neg, t) = match rest.split_first()? {
                (b'-', t) => (true, t),
                (b'+', t) => (false, t),
                _ => (false, rest),
            };
            let c = memchr::memchr(b':', t)?;
            if t.len() < c + 6 || t[c + 3] != b':' {
                return None;
            }
            let whole = int(&t[..c])?
                .checked_mul(3600)?
                .checked_add(digits(&t[c + 1..c + 3])? * 60 + digits(&t[c + 4..c + 6])?)?;
            us = whole
                .checked_mul(1_000_000)?
                .checked_add(fraction(&t[c + 6..])?)?;
            if neg {
                us = -us;
            }
            break;
        };
        let v = i32::try_from(signed(&rest[..sp])?).ok()?;
        let after = &rest[sp + 1..];
        let end = memchr::memchr(b' ', after).unwrap_or(after.len());
        match &after[..end] {
            b"year" | b"years" => months = months.checked_add(v.checked_mul(12)?)?,
            b"mon" | b"mons" => months = months.checked_add(v)?,
            b"day" | b"days" => days = days.checked_add(v)?,
            _ => return None,
        }
        rest = match after.get(end + 1..) {
            Some(r) if !r.is_empty() => r,
            // A space at the end, or none: the end.
            Some(_) => return None,
            None => &[],
        };
    }
    again.clear();
    let (mut is_zero, mut is_before) = (true, false);
    for (v, unit) in [
        (months / 12, &b"year"[..]),
        (months % 12, b"mon"),
        (days, b"day"),
    ] {
        if v == 0 {
            continue;
        }
        lead(again, is_zero, v < 0, is_before);
        push_num(again, u64::from(v.unsigned_abs()), 1);
        again.push(b' ');
        again.extend_from_slice(unit);
        if v != 1 {
            again.push(b's');
        }
        is_before = v < 0;
        is_zero = false;
    }
    if is_zero || us != 0 {
        lead(again, is_zero, us < 0, is_before);
        let a = us.unsigned_abs();
        let h = a / US_PER_HOUR as u64;
        let rem = a % US_PER_HOUR as u64;
        push_num(again, h, 2);
        again.push(b':');
        push_num(again, rem / 60_000_000, 2);
        again.push(b':');
        push_seconds(again, rem % 60_000_000 / 1_000_000, rem % 1_000_000);
    }
    if again[..] != *f {
        return None;
    }
    out.extend_from_slice(&us.to_be_bytes());
    out.extend_from_slice(&days.to_be_bytes());
    out.extend_from_slice(&months.to_be_bytes());
    Some(())
}

/// What interval_out writes before a part: a space after an earlier part, then `-` for a
/// negative part, or `+` for a positive one after a negative one.
fn lead(again: &mut Vec<u8>, first: bool, negative: bool, after_negative: bool) {
    if !first {
        again.push(b' ');
    }
    if negative {
        again.push(b'-');
    } else if after_negative {
        again.push(b'+');
    }
}

/// A decimal number without leading zeros, up to `max`.
fn small(f: &[u8], max: i64) -> Option<u8> {
    // Three digits at most: more would not fit `digits`' arithmetic, let alone a u8.
    if f.len() > 3 || (f.len() > 1 && f[0] == b'0') {
        return None;
    }
    let v = digits(f)?;
    (v <= max).then_some(v as u8)
}

/// An inet (`addr`, or `addr/bits` when the mask is not the whole address) or a cidr
/// (always `addr/bits`); binary: family, bits, cidr flag, address length, address.
fn inet(f: &[u8], cidr: bool, out: &mut Vec<u8>) -> Option<()> {
    let (addr, bits) = match memchr::memchr(b'/', f) {
        Some(p) => (&f[..p], Some(&f[p + 1..])),
        None => (f, None),
    };
    let (family, max, bytes) = if memchr::memchr(b':', addr).is_none() {
        // IPv4: four decimal octets without leading zeros.
        let mut octets = [0u8; 4];
        let mut parts = addr.split(|&c| c == b'.');
        for o in &mut octets {
            *o = small(parts.next()?, 255)?;
        }
        if parts.next().is_some() {
            return None;
        }
        (2, 32, octets.to_vec())
    } else {
        // IPv6: taken when Rust writes the address read as the same text (it does for
        // what PostgreSQL writes, but for a few forms such as `::1.2.3.4`, which go to
        // the server as text).
        let a: std::net::Ipv6Addr = std::str::from_utf8(addr).ok()?.parse().ok()?;
        if a.to_string().as_bytes() != addr {
            return None;
        }
        (3, 128, a.octets().to_vec())
    };
    let bits = match bits {
        Some(b) => small(b, max)?,
        None if cidr => return None,
        None => max as u8,
    };
    if bits == max as u8 && !cidr && f.len() != addr.len() {
        // inet leaves a whole-address mask out.
        return None;
    }
    out.extend_from_slice(&[family, bits, u8::from(cidr), bytes.len() as u8]);
    out.extend_from_slice(&bytes);
    Some(())
}

/// A decimal integer as PostgreSQL writes one: an optional `-`, then digits.
fn int(f: &[u8]) -> Option<i64> {
    let (neg, digits) = match f.split_first() {
        Some((b'-', d)) => (true, d),
        _ => (false, f),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    // 19 digits fit in a u64 (at most 10^19 - 1).
    let mut v: u64 = 0;
    for &c in digits {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + d as u64;
    }
    if neg {
        (v <= i64::MIN.unsigned_abs()).then(|| (v as i64).wrapping_neg())
    } else {
        i64::try_from(v).ok()
    }
}

/// A float as PostgreSQL writes one (shortest exact digits, `NaN`, `Infinity`).
fn float_text(f: &[u8]) -> Option<&str> {
    let word = matches!(f, b"NaN" | b"Infinity" | b"-Infinity");
    let digits = f.iter().any(u8::is_ascii_digit)
        && f.iter()
            .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'-' | b'+'));
    if !(word || digits) {
        return None;
    }
    std::str::from_utf8(f).ok()
}

/// numeric: `-`, integer digits, `.` and fraction digits, or NaN and the infinities;
/// binary: digit count, weight, sign and display scale, then base-10000 digits.
fn numeric(f: &[u8], out: &mut Vec<u8>, digits: &mut Vec<u8>) -> Option<()> {
    let special = |sign: u16, out: &mut Vec<u8>| {
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(&sign.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
    };
    match f {
        b"NaN" => {
            special(0xC000, out);
            return Some(());
        }
        b"Infinity" => {
            special(0xD000, out);
            return Some(());
        }
        b"-Infinity" => {
            special(0xF000, out);
            return Some(());
        }
        _ => {}
    }
    let (neg, body) = match f.split_first() {
        Some((b'-', b)) => (true, b),
        _ => (false, f),
    };
    let (int_part, frac) = match memchr::memchr(b'.', body) {
        Some(p) => (&body[..p], &body[p + 1..]),
        None => (body, &b""[..]),
    };
    if int_part.is_empty()
        || (memchr::memchr(b'.', body).is_some() && frac.is_empty())
        || !int_part.iter().chain(frac).all(u8::is_ascii_digit)
        || (int_part.len() > 1 && int_part[0] == b'0')
    {
        return None;
    }
    let dscale = u16::try_from(frac.len()).ok()?;
    // Pad the integer part on the left and the fraction on the right to whole groups of 4.
    let lead = (4 - int_part.len() % 4) % 4;
    let trail = (4 - frac.len() % 4) % 4;
    digits.clear();
    digits.resize(lead, b'0');
    digits.extend_from_slice(int_part);
    digits.extend_from_slice(frac);
    digits.resize(digits.len() + trail, b'0');
    let groups: Vec<u16> = digits
        .chunks_exact(4)
        .map(|g| g.iter().fold(0u16, |a, &c| a * 10 + (c - b'0') as u16))
        .collect();
    let mut weight = ((lead + int_part.len()) / 4) as i64 - 1;
    let mut first = 0;
    while first < groups.len() && groups[first] == 0 {
        first += 1;
        weight -= 1;
    }
    let mut end = groups.len();
    while end > first && groups[end - 1] == 0 {
        end -= 1;
    }
    let used = &groups[first..end];
    if used.is_empty() {
        weight = 0;
    }
    let sign: u16 = if neg && !used.is_empty() { 0x4000 } else { 0 };
    if neg && used.is_empty() {
        return None;
    }
    out.extend_from_slice(&i16::try_from(used.len()).ok()?.to_be_bytes());
    out.extend_from_slice(&i16::try_from(weight).ok()?.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&dscale.to_be_bytes());
    for g in used {
        out.extend_from_slice(&g.to_be_bytes());
    }
    Some(())
}

/// A uuid as PostgreSQL writes one: 8-4-4-4-12 lowercase hex digits.
fn uuid(f: &[u8], out: &mut Vec<u8>) -> Option<()> {
    if f.len() != 36 || f[8] != b'-' || f[13] != b'-' || f[18] != b'-' || f[23] != b'-' {
        return None;
    }
    let mut hex = f.iter().filter(|&&c| c != b'-');
    for _ in 0..16 {
        let hi = HEX[*hex.next()? as usize];
        let lo = HEX[*hex.next()? as usize];
        if (hi | lo) & 0x80 != 0 {
            return None;
        }
        out.push(hi << 4 | lo);
    }
    Some(())
}

fn strip_bc(f: &[u8]) -> (&[u8], bool) {
    match f.strip_suffix(b" BC") {
        Some(b) => (b, true),
        None => (f, false),
    }
}

/// Fixed-width decimal digits.
fn digits(f: &[u8]) -> Option<i64> {
    if f.is_empty() || !f.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(f.iter().fold(0i64, |a, &c| a * 10 + (c - b'0') as i64))
}

/// `YYYY-MM-DD` (four or more year digits) at the start of `f`: days since 2000-01-01 and
/// what follows. `bc`: the year is before Christ (1 BC is the astronomical year 0).
fn date(f: &[u8], bc: bool) -> Option<(i64, &[u8])> {
    let dash = memchr::memchr(b'-', f)?;
    if !(4..=9).contains(&dash) || f.len() < dash + 6 || f[dash + 3] != b'-' {
        return None;
    }
    let mut year = digits(&f[..dash])?;
    let month = digits(&f[dash + 1..dash + 3])?;
    let day = digits(&f[dash + 4..dash + 6])?;
    if year == 0 {
        return None;
    }
    if bc {
        year = 1 - year;
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    Some((
        days_from_civil(year, month, day) - DAYS_2000,
        &f[dash + 6..],
    ))
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year.rem_euclid(4) == 0
            && (year.rem_euclid(100) != 0 || year.rem_euclid(400) == 0) =>
        {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 in the proleptic Gregorian calendar (astronomical years).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// 2000-01-01, PostgreSQL's epoch, from 1970-01-01.
const DAYS_2000: i64 = 10_957;

/// `YYYY-MM-DD HH:MM:SS[.ffffff]`, with `tz` an offset `+HH[:MM[:SS]]`, then ` BC` if
/// so: microseconds since 2000-01-01 00:00 (UTC with an offset).
fn timestamp(f: &[u8], tz: bool) -> Option<i64> {
    let (body, bc) = strip_bc(f);
    let (days, rest) = date(body, bc)?;
    if rest.len() < 9 || rest[0] != b' ' || rest[3] != b':' || rest[6] != b':' {
        return None;
    }
    let h = digits(&rest[1..3])?;
    let m = digits(&rest[4..6])?;
    let s = digits(&rest[7..9])?;
    if h > 23 || m > 59 || s > 59 {
        return None;
    }
    let rest = &rest[9..];
    // The fraction, if any, runs to the offset (or the end).
    let cut = match rest.first() {
        Some(b'.') => 1 + rest[1..].iter().take_while(|c| c.is_ascii_digit()).count(),
        _ => 0,
    };
    let micros = fraction(&rest[..cut])?;
    let rest = &rest[cut..];
    let mut offset = 0;
    if tz {
        let neg = match rest.first() {
            Some(b'+') => false,
            Some(b'-') => true,
            _ => return None,
        };
        let o = &rest[1..];
        let (oh, om, os) = match o.len() {
            2 => (digits(o)?, 0, 0),
            5 if o[2] == b':' => (digits(&o[..2])?, digits(&o[3..5])?, 0),
            8 if o[2] == b':' && o[5] == b':' => {
                (digits(&o[..2])?, digits(&o[3..5])?, digits(&o[6..8])?)
            }
            _ => return None,
        };
        if om > 59 || os > 59 {
            return None;
        }
        offset = (oh * 3600 + om * 60 + os) * if neg { -1 } else { 1 };
    } else if !rest.is_empty() {
        return None;
    }
    let secs = days.checked_mul(86_400)? + h * 3600 + m * 60 + s - offset;
    secs.checked_mul(1_000_000)?.checked_add(micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(kinds: &[Kind], line: &str) -> Option<Vec<u8>> {
        let mut r = Rows::new(kinds.to_vec());
        let (mut out, mut text) = (vec![9], Vec::new());
        let row = format!("{line}\n");
        if r.rows(row.as_bytes(), &mut out, &mut text) == 0 {
            assert!(text.is_empty());
            Some(out[1..].to_vec())
        } else {
            assert_eq!(out, vec![9], "a declined row leaves the output as it was");
            assert_eq!(text, row.as_bytes(), "a declined row is handed back whole");
            None
        }
    }

    /// One field's binary value (after the field count and its length).
    fn one(kind: Kind, text: &str) -> Option<Vec<u8>> {
        let b = conv(&[kind], text)?;
        assert_eq!(&b[..2], &1i16.to_be_bytes());
        let len = i32::from_be_bytes(b[2..6].try_into().unwrap());
        assert_eq!(len as usize, b.len() - 6);
        Some(b[6..].to_vec())
    }

    /// A batch converts in one pass exactly as its rows do one by one: nothing of one row
    /// (an escape, a field) carries into the next, a declined row comes back whole in its
    /// place among the others, and bytes after the last newline are handed back.
    #[test]
    fn a_batch_converts_as_its_rows_do_one_by_one() {
        let kinds = [Kind::Int4, Kind::Text, Kind::Date];
        let rows: [&[u8]; 7] = [
            b"1\ta\\tb\t2024-01-02\n",
            b"2\tplain\t\\N\n",
            b"3\\\tx\t2024-01-02\n",
            b"4\tx\n",
            b"\\N\t\\\\\t1999-12-31\n",
            b"6\tx\ty\tz\n",
            b"7\t\t2000-01-01\n",
        ];
        let (mut want, mut want_text, mut want_n) = (Vec::new(), Vec::new(), 0);
        for row in rows {
            want_n += Rows::new(kinds.to_vec()).rows(row, &mut want, &mut want_text);
        }
        assert_eq!(want_n, 3, "rows 3, 4 and 6 are declined");
        let batch: Vec<u8> = rows.concat();
        let mut r = Rows::new(kinds.to_vec());
        let (mut out, mut text) = (Vec::new(), Vec::new());
        assert_eq!(r.rows(&batch, &mut out, &mut text), 3);
        assert_eq!((out, &text), (want.clone(), &want_text));
        let mut cut = batch.clone();
        cut.extend_from_slice(b"8\tno end");
        let (mut out, mut text) = (Vec::new(), Vec::new());
        assert_eq!(r.rows(&cut, &mut out, &mut text), 4);
        assert_eq!(out, want);
        assert!(text.ends_with(b"\n8\tno end"), "{text:?}");
    }

    #[test]
    fn rows_split_into_fields_and_nulls() {
        let b = conv(&[Kind::Int4, Kind::Text], "7\t\\N").unwrap();
        assert_eq!(b, [0, 2, 0, 0, 0, 4, 0, 0, 0, 7, 0xff, 0xff, 0xff, 0xff]);
        // Too few or too many fields: declined.
        assert!(conv(&[Kind::Int4, Kind::Text], "7").is_none());
        assert!(conv(&[Kind::Int4], "7\t8").is_none());
        // An empty text is a value, not a null.
        assert_eq!(one(Kind::Text, "").unwrap(), b"");
    }

    #[test]
    fn text_escapes_are_those_copy_writes() {
        assert_eq!(
            one(Kind::Text, "a\\tb\\nc\\\\d\\re\\bf\\fg\\vh").unwrap(),
            b"a\tb\nc\\d\re\x08f\x0cg\x0bh"
        );
        assert_eq!(one(Kind::Text, "\\\\N").unwrap(), b"\\N");
        // Escapes COPY accepts but never writes are left to the server.
        assert!(one(Kind::Text, "\\101").is_none());
        assert!(one(Kind::Text, "\\x41").is_none());
        assert!(one(Kind::Text, "a\\").is_none());
        assert_eq!(one(Kind::Jsonb, "{\"a\": 1}").unwrap(), b"\x01{\"a\": 1}");
    }

    #[test]
    fn scalars_take_only_their_canonical_text() {
        assert_eq!(
            one(Kind::Int2, "-32768").unwrap(),
            (-32768i16).to_be_bytes()
        );
        assert!(one(Kind::Int2, "32768").is_none());
        assert_eq!(
            one(Kind::Int8, "-9223372036854775808").unwrap(),
            i64::MIN.to_be_bytes()
        );
        assert!(one(Kind::Int8, "9223372036854775808").is_none());
        for bad in ["", "-", "+1", " 1", "1 ", "1_000", "0x10"] {
            assert!(one(Kind::Int4, bad).is_none(), "{bad:?}");
        }
        assert_eq!(
            one(Kind::Oid, "4294967295").unwrap(),
            u32::MAX.to_be_bytes()
        );
        assert!(one(Kind::Oid, "-1").is_none());
        assert_eq!(one(Kind::Bool, "t").unwrap(), [1]);
        assert!(one(Kind::Bool, "true").is_none());
        assert_eq!(
            one(Kind::Uuid, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap(),
            [
                0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38,
                0x0a, 0x11
            ]
        );
        assert!(one(Kind::Uuid, "a0eebc999c0b4ef8bb6d6bb9bd380a11").is_none());
        assert_eq!(one(Kind::Bytea, "\\\\x00ff10").unwrap(), [0, 0xff, 0x10]);
        assert_eq!(one(Kind::Bytea, "\\\\x").unwrap(), b"");
        // The escape output format, after COPY's own escapes: `\\` is a backslash,
        // `\ooo` a byte; anything else goes to the server as text.
        assert_eq!(
            one(Kind::Bytea, "ab\\\\000\\\\\\\\c\\\\377").unwrap(),
            b"ab\0\\c\xff"
        );
        assert_eq!(one(Kind::Bytea, "").unwrap(), b"");
        assert_eq!(one(Kind::Bytea, "\\\\\\\\").unwrap(), b"\\");
        assert!(one(Kind::Bytea, "a\\\\400").is_none());
        assert!(one(Kind::Bytea, "a\\\\09").is_none());
        assert!(one(Kind::Bytea, "a\\\\").is_none());
        assert!(one(Kind::Bytea, "\\\\x0").is_none());
        assert!(one(Kind::Bytea, "\\\\x0g").is_none());
        assert!(one(Kind::Int4, "1\\n").is_none());
    }

    #[test]
    fn times_and_intervals_take_only_what_their_output_functions_write() {
        let t = |s: &str| one(Kind::Time, s).map(|b| i64::from_be_bytes(b.try_into().unwrap()));
        assert_eq!(t("00:00:00"), Some(0));
        assert_eq!(t("01:02:03.5"), Some(3_723_500_000));
        assert_eq!(t("23:59:59.999999"), Some(86_399_999_999));
        assert_eq!(t("24:00:00"), Some(86_400_000_000));
        for bad in [
            "24:00:00.1",
            "1:02:03",
            "01:02:03.50",
            "01:02:03.",
            "01:60:00",
            "01:02",
        ] {
            assert!(t(bad).is_none(), "{bad:?}");
        }
        let i = |s: &str| {
            one(Kind::Interval, s).map(|b| {
                (
                    i64::from_be_bytes(b[..8].try_into().unwrap()),
                    i32::from_be_bytes(b[8..12].try_into().unwrap()),
                    i32::from_be_bytes(b[12..].try_into().unwrap()),
                )
            })
        };
        // (microseconds, days, months), as the server printed them (IntervalStyle postgres).
        assert_eq!(i("00:00:00"), Some((0, 0, 0)));
        assert_eq!(
            i("-10 mons -3 days +04:05:06.5"),
            Some((14_706_500_000, -3, -10))
        );
        assert_eq!(i("1 mon -1 days"), Some((0, -1, 1)));
        assert_eq!(i("-1 days -00:00:01"), Some((-1_000_000, -1, 0)));
        assert_eq!(i("100:00:00"), Some((360_000_000_000, 0, 0)));
        assert_eq!(i("-00:00:00.000001"), Some((-1, 0, 0)));
        assert_eq!(i("1 year 2 mons"), Some((0, 0, 14)));
        assert_eq!(i("-178956970 years -8 mons"), Some((0, 0, i32::MIN)));
        for bad in [
            "1 years",
            "2 mon",
            "12 mons",
            "1 day 00:00:00",
            "0 days",
            "+1 day",
            "1 day 1 day",
            "-1 days 00:00:01",
            "1 day  01:00:00",
            "01:00",
            "1 week",
            "@ 1 day",
            "P1D",
            "00:00:00.1234567",
        ] {
            assert!(i(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn addresses_are_converted_as_inet_and_cidr() {
        assert_eq!(
            one(Kind::Inet(false), "10.1.2.3").unwrap(),
            [2, 32, 0, 4, 10, 1, 2, 3]
        );
        assert_eq!(
            one(Kind::Inet(false), "10.1.2.3/8").unwrap(),
            [2, 8, 0, 4, 10, 1, 2, 3]
        );
        assert_eq!(
            one(Kind::Inet(true), "10.0.0.0/8").unwrap(),
            [2, 8, 1, 4, 10, 0, 0, 0]
        );
        let v6 = one(Kind::Inet(false), "2001:db8::1/64").unwrap();
        assert_eq!(&v6[..4], [3, 64, 0, 16]);
        assert_eq!(
            &v6[4..],
            "2001:db8::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
        assert!(one(Kind::Inet(false), "::ffff:1.2.3.4").is_some());
        for bad in [
            "10.1.2.3/32",
            "010.1.2.3",
            "10.1.2",
            "10.1.2.3/33",
            "2001:DB8::1",
            "2001:db8:0:0:0:0:0:1",
            "::1.2.3.4",
            "fe80::1%eth0",
            // Digits enough to overflow 64 bits (and wrap to 10 if they did).
            "18446744073709551626.1.2.3",
            "10.1.2.3/18446744073709551624",
        ] {
            assert!(one(Kind::Inet(false), bad).is_none(), "{bad:?}");
        }
        // A cidr always shows its mask.
        assert!(one(Kind::Inet(true), "10.1.2.3").is_none());
    }

    #[test]
    fn one_dimensional_arrays_quoted_as_array_out_quotes() {
        let ints = one(Kind::Array(23), "{1,-2,NULL}").unwrap();
        let mut want = Vec::new();
        for v in [1i32, 1, 23, 3, 1] {
            want.extend_from_slice(&v.to_be_bytes());
        }
        for e in [&1i32.to_be_bytes()[..], &(-2i32).to_be_bytes()] {
            want.extend_from_slice(&4i32.to_be_bytes());
            want.extend_from_slice(e);
        }
        want.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(ints, want);
        let mut empty = Vec::new();
        for v in [0i32, 0, 25] {
            empty.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(one(Kind::Array(25), "{}").unwrap(), empty);
        // Text elements, through COPY's escapes (`\\` for a backslash) and the array's
        // (`\"`, `\\` inside quotes).
        let texts = one(
            Kind::Array(25),
            "{\"\",\"NULL\",\"null\",NULL,\"a b\",\"x\\\\\"y\",\"b\\\\\\\\c\",\"{\",é,\"tab\\there\"}",
        )
        .unwrap();
        let mut at = 20;
        let mut got = Vec::new();
        while at < texts.len() {
            let len = i32::from_be_bytes(texts[at..at + 4].try_into().unwrap());
            at += 4;
            if len < 0 {
                got.push(None);
                continue;
            }
            got.push(Some(
                String::from_utf8(texts[at..at + len as usize].to_vec()).unwrap(),
            ));
            at += len as usize;
        }
        let want: Vec<Option<String>> = [
            Some(""),
            Some("NULL"),
            Some("null"),
            None,
            Some("a b"),
            Some("x\"y"),
            Some("b\\c"),
            Some("{"),
            Some("é"),
            Some("tab\there"),
        ]
        .iter()
        .map(|v| v.map(String::from))
        .collect();
        assert_eq!(got, want);
        assert_eq!(&texts[4..8], &1i32.to_be_bytes(), "the null flag");
        assert_eq!(&texts[12..16], &10i32.to_be_bytes(), "the length");
        let ts = one(Kind::Array(1184), "{\"2000-01-01 00:00:00+00\"}").unwrap();
        assert_eq!(&ts[ts.len() - 8..], &0i64.to_be_bytes());
        for bad in [
            "{{1,2},{3,4}}",
            "[0:1]={1,2}",
            "{1,}",
            "{,1}",
            "{\"1\"}",
            "{1 ,2}",
            "{null}",
            "{1,2",
            "1,2}",
            "{\"1\"x}",
            "{x}",
        ] {
            assert!(one(Kind::Array(23), bad).is_none(), "{bad:?}");
        }
        // Quotes only where array_out puts them; escapes only of `"` and `\`.
        assert!(one(Kind::Array(25), "{\"ab\"}").is_none());
        assert!(one(Kind::Array(25), "{a b}").is_none());
        assert!(one(Kind::Array(25), "{\"a\\\\nb\"}").is_none());
        assert!(one(Kind::Array(25), "{Null}").is_none());
        // Element types not converted, and arrays of arrays, are left as text.
        assert_eq!(Kind::of(1001), None);
        assert_eq!(Kind::of(1007), Some(Kind::Array(23)));
        assert!(
            array(
                1007,
                b"{}",
                &mut Vec::new(),
                &mut Vec::new(),
                &mut Vec::new()
            )
            .is_none()
        );
        assert!(array(17, b"{}", &mut Vec::new(), &mut Vec::new(), &mut Vec::new()).is_none());
    }

    /// Text built at random from the characters these parsers look at, for every kind:
    /// declined or converted, never a panic (an overflow included: tests build with
    /// overflow checks).
    #[test]
    fn random_text_never_panics_any_kind() {
        let kinds = [
            Kind::Bool,
            Kind::Int2,
            Kind::Int4,
            Kind::Int8,
            Kind::Oid,
            Kind::Float4,
            Kind::Float8,
            Kind::Numeric,
            Kind::Text,
            Kind::Jsonb,
            Kind::Bytea,
            Kind::Uuid,
            Kind::Date,
            Kind::Timestamp,
            Kind::TimestampTz,
            Kind::Time,
            Kind::Interval,
            Kind::Inet(false),
            Kind::Inet(true),
            Kind::Array(23),
            Kind::Array(25),
            Kind::Array(1186),
            Kind::Array(869),
            Kind::Array(1700),
        ];
        let alphabet = b"0123456789-+:./ ,{}\"\\\\tNxaefBCdaysmonyr:[]=";
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut converted = 0;
        for _ in 0..200_000 {
            let kind = kinds[(next() % kinds.len() as u64) as usize];
            let len = (next() % 40) as usize;
            let mut text: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            if next() % 4 == 0 {
                // Long runs of digits, where arithmetic could overflow.
                text.extend(std::iter::repeat_n(b'9', (next() % 30) as usize));
            }
            let mut r = Rows::new(vec![kind]);
            let (mut out, mut back) = (Vec::new(), Vec::new());
            text.push(b'\n');
            if r.rows(&text, &mut out, &mut back) == 0 {
                converted += 1;
            }
        }
        assert!(converted > 0, "some random text is valid");
    }

    #[test]
    fn numerics_become_base_10000_digits() {
        let n = |s: &str| one(Kind::Numeric, s);
        let enc = |nd: i16, w: i16, sign: u16, ds: u16, d: &[u16]| {
            let mut v = Vec::new();
            v.extend_from_slice(&nd.to_be_bytes());
            v.extend_from_slice(&w.to_be_bytes());
            v.extend_from_slice(&sign.to_be_bytes());
            v.extend_from_slice(&ds.to_be_bytes());
            for x in d {
                v.extend_from_slice(&x.to_be_bytes());
            }
            v
        };
        assert_eq!(n("0").unwrap(), enc(0, 0, 0, 0, &[]));
        assert_eq!(n("0.00").unwrap(), enc(0, 0, 0, 2, &[]));
        assert_eq!(n("12345.678").unwrap(), enc(3, 1, 0, 3, &[1, 2345, 6780]));
        assert_eq!(n("-0.0001").unwrap(), enc(1, -1, 0x4000, 4, &[1]));
        assert_eq!(n("10000").unwrap(), enc(1, 1, 0, 0, &[1]));
        assert_eq!(n("0.00000001").unwrap(), enc(1, -2, 0, 8, &[1]));
        assert_eq!(n("NaN").unwrap(), enc(0, 0, 0xC000, 0, &[]));
        assert_eq!(n("-Infinity").unwrap(), enc(0, 0, 0xF000, 0, &[]));
        for bad in ["", "-", ".5", "5.", "01", "1e5", "-0", " 1"] {
            assert!(n(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn dates_and_timestamps_count_from_2000() {
        let d = |s: &str| one(Kind::Date, s).map(|b| i32::from_be_bytes(b.try_into().unwrap()));
        assert_eq!(d("2000-01-01"), Some(0));
        assert_eq!(d("1999-12-31"), Some(-1));
        assert_eq!(d("2000-03-01"), Some(60));
        assert_eq!(d("0001-01-01 BC"), Some(-730_485));
        assert_eq!(d("infinity"), Some(i32::MAX));
        assert!(d("2001-02-29").is_none());
        assert!(d("0000-01-01").is_none());
        assert!(d("2000-1-01").is_none());
        let t = |s: &str, tz| {
            one(
                if tz {
                    Kind::TimestampTz
                } else {
                    Kind::Timestamp
                },
                s,
            )
            .map(|b| i64::from_be_bytes(b.try_into().unwrap()))
        };
        assert_eq!(t("2000-01-01 00:00:01.5", false), Some(1_500_000));
        assert_eq!(t("2000-01-01 00:00:00.000001", false), Some(1));
        // timestamp_out writes no trailing zeros, and no bare point.
        assert!(t("2000-01-01 00:00:01.50", false).is_none());
        assert!(t("2000-01-01 00:00:01.+00", true).is_none());
        assert_eq!(t("2000-01-01 01:00:00+01", true), Some(0));
        assert_eq!(t("2000-01-01 00:00:00-05:30", true), Some(19_800_000_000));
        assert_eq!(
            t("2000-01-01 00:00:00+00:19:32", true),
            Some(-1_172_000_000)
        );
        assert!(t("2000-01-01 00:00:00", true).is_none());
        assert!(t("2000-01-01 00:00:00+01", false).is_none());
        assert!(t("2000-01-01 24:00:00", false).is_none());
        assert!(t("2000-01-01 00:00:00.1234567", false).is_none());
        assert!(t("2000-01-01T00:00:00", false).is_none());
    }
}
