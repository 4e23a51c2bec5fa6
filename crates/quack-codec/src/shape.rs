//! What the walk of a DataChunk knows of a column's type: how its vector is laid out, and
//! which values DuckDB trusts it to hold. A leaf, read by the walk ([`crate::rows`]) and by the
//! rewrite of compressed vectors ([`crate::flatten`]).

/// How field 102, 103 and 104 of a vector are laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Bytes per row, and what each value may be.
    Fixed(u64, Values),
    Strings,
    /// GEOMETRY: strings, each one geometry in DuckDB's internal WKB ([`crate::wkb`]).
    Wkb,
    Struct(Vec<Shape>),
    List(Box<Shape>),
    /// The child, and how many of it each row holds.
    Array(Box<Shape>, u64),
    /// A MAP's key: no row of it may be NULL, at any depth. DuckDB's map functions compare
    /// keys and end the database on a NULL one (a twenty-sixth review's `map_concat` on a
    /// TEMP table's MAP); SQL cannot make one.
    Key(Box<Shape>),
}

/// Which values of a fixed-size type DuckDB handles whatever their bits, and which it trusts
/// to keep a rule (its casts index tables and divide by powers of ten taken from them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Values {
    /// Every bit pattern, and a sequence within the type's range may stand for them
    /// (TINYINT to BIGINT: DuckDB generates sequences of these alone, and a start or step
    /// past the type's range is an internal error that ends its database).
    Signed,
    /// Every bit pattern, but no sequence.
    Any,
    /// SQLNULL's: every row is NULL once cast to the table's type.
    Null,
    /// Below 10^width in magnitude (DECIMAL).
    Decimal(u64),
    /// Microseconds within a day (TIME: a twenty-first review crashed a worker formatting
    /// 2^62 of them).
    TimeOfDay,
    /// 0 or 1: DuckDB stores another byte as it is, and `v`, `v = true` and `NOT v` then
    /// disagree (a twenty-second review's).
    Boolean,
}

impl Values {
    pub(crate) fn holds(self, value: i128) -> bool {
        match self {
            Values::Signed | Values::Any | Values::Null => true,
            Values::Decimal(width) => {
                value != i128::MIN && value.unsigned_abs() < 10u128.pow(width as u32)
            }
            Values::TimeOfDay => (0..=86_400_000_000).contains(&value),
            Values::Boolean => matches!(value, 0 | 1),
        }
    }
}

impl Shape {
    /// Bytes DuckDB allocates for `rows` rows of this shape: a `string_t` and a `list_entry_t`
    /// are 16 bytes; a STRUCT has its fields' and an ARRAY its child's.
    pub(crate) fn bytes(&self, rows: u64) -> u64 {
        match self {
            Shape::Fixed(width, _) => rows.saturating_mul(*width),
            Shape::Strings | Shape::Wkb => rows.saturating_mul(16),
            // The child starts with as many rows as the list (`VectorListBuffer`).
            Shape::List(child) => rows.saturating_mul(16).saturating_add(child.bytes(rows)),
            Shape::Struct(fields) => fields
                .iter()
                .fold(0, |sum, f| sum.saturating_add(f.bytes(rows))),
            Shape::Array(child, size) => child.bytes(rows.saturating_mul(*size)),
            Shape::Key(key) => key.bytes(rows),
        }
    }

    /// Whether SQLNULL is in it, at any depth.
    pub(crate) fn names_null(&self) -> bool {
        match self {
            Shape::Fixed(_, values) => *values == Values::Null,
            Shape::Strings | Shape::Wkb => false,
            Shape::Struct(fields) => fields.iter().any(Shape::names_null),
            Shape::List(child) | Shape::Array(child, _) | Shape::Key(child) => child.names_null(),
        }
    }
}
