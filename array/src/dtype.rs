//! Element types of arrays, NumPy's promotion rules between them, and the Rust types
//! chunks are stored as.

use std::fmt;

use datafusion_common::arrow::datatypes::{
    ArrowNativeType, ArrowPrimitiveType, DataType, Float32Type, Float64Type, Int8Type, Int16Type,
    Int32Type, Int64Type, TimeUnit, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use num_traits::{AsPrimitive, NumCast};
use serde::{Deserialize, Serialize};

/// The element type of an array (NumPy's dtypes that Shoal supports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DType {
    /// `bool`, stored one byte per element (0 or 1).
    Bool,
    /// `int8`.
    I8,
    /// `int16`.
    I16,
    /// `int32`.
    I32,
    /// `int64`.
    I64,
    /// `uint8`.
    U8,
    /// `uint16`.
    U16,
    /// `uint32`.
    U32,
    /// `uint64`.
    U64,
    /// `float32`.
    F32,
    /// `float64`.
    F64,
    /// `datetime64[ns]`: nanoseconds since 1970-01-01, stored as `i64`.
    DateTime,
}

impl DType {
    /// Every dtype, in NumPy's order of kinds.
    pub const ALL: [DType; 12] = [
        Self::Bool,
        Self::I8,
        Self::I16,
        Self::I32,
        Self::I64,
        Self::U8,
        Self::U16,
        Self::U32,
        Self::U64,
        Self::F32,
        Self::F64,
        Self::DateTime,
    ];

    /// NumPy's name for the dtype.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bool => "bool",
            Self::I8 => "int8",
            Self::I16 => "int16",
            Self::I32 => "int32",
            Self::I64 => "int64",
            Self::U8 => "uint8",
            Self::U16 => "uint16",
            Self::U32 => "uint32",
            Self::U64 => "uint64",
            Self::F32 => "float32",
            Self::F64 => "float64",
            Self::DateTime => "datetime64[ns]",
        }
    }

    /// Parses a NumPy dtype name (`float64`, `f8`, `int32`, `bool`, `datetime64[ns]` ...).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "bool" | "b1" => Self::Bool,
            "int8" | "i1" => Self::I8,
            "int16" | "i2" => Self::I16,
            "int32" | "i4" => Self::I32,
            "int64" | "i8" => Self::I64,
            "uint8" | "u1" => Self::U8,
            "uint16" | "u2" => Self::U16,
            "uint32" | "u4" => Self::U32,
            "uint64" | "u8" => Self::U64,
            "float32" | "f4" => Self::F32,
            "float64" | "f8" => Self::F64,
            "datetime64[ns]" | "datetime64" | "M8[ns]" => Self::DateTime,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::Bool | Self::I8 | Self::U8 => 1,
            Self::I16 | Self::U16 => 2,
            Self::I32 | Self::U32 | Self::F32 => 4,
            Self::I64 | Self::U64 | Self::F64 | Self::DateTime => 8,
        }
    }

    /// `float32` or `float64`.
    pub fn is_float(self) -> bool {
        matches!(self, Self::F32 | Self::F64)
    }

    /// A signed or unsigned integer.
    pub fn is_integer(self) -> bool {
        self.is_signed() || self.is_unsigned()
    }

    /// `int8` to `int64`.
    pub fn is_signed(self) -> bool {
        matches!(self, Self::I8 | Self::I16 | Self::I32 | Self::I64)
    }

    /// `uint8` to `uint64`.
    pub fn is_unsigned(self) -> bool {
        matches!(self, Self::U8 | Self::U16 | Self::U32 | Self::U64)
    }

    /// Integers and floats: the dtypes arithmetic works on.
    pub fn is_numeric(self) -> bool {
        self.is_integer() || self.is_float()
    }

    /// The Arrow type of this dtype as users see it (in tables and collected batches).
    pub fn arrow_type(self) -> DataType {
        match self {
            Self::Bool => DataType::Boolean,
            Self::DateTime => DataType::Timestamp(TimeUnit::Nanosecond, None),
            other => other.storage_type(),
        }
    }

    /// The Arrow type chunks of this dtype are stored as between tasks.
    pub fn storage_type(self) -> DataType {
        match self {
            Self::Bool | Self::U8 => DataType::UInt8,
            Self::I8 => DataType::Int8,
            Self::I16 => DataType::Int16,
            Self::I32 => DataType::Int32,
            Self::I64 | Self::DateTime => DataType::Int64,
            Self::U16 => DataType::UInt16,
            Self::U32 => DataType::UInt32,
            Self::U64 => DataType::UInt64,
            Self::F32 => DataType::Float32,
            Self::F64 => DataType::Float64,
        }
    }

    /// The dtype of a column of Arrow type `t`, when arrays can hold it.
    pub fn from_arrow(t: &DataType) -> Option<Self> {
        Some(match t {
            DataType::Boolean => Self::Bool,
            DataType::Int8 => Self::I8,
            DataType::Int16 => Self::I16,
            DataType::Int32 => Self::I32,
            DataType::Int64 => Self::I64,
            DataType::UInt8 => Self::U8,
            DataType::UInt16 => Self::U16,
            DataType::UInt32 => Self::U32,
            DataType::UInt64 => Self::U64,
            DataType::Float32 => Self::F32,
            DataType::Float64 => Self::F64,
            DataType::Timestamp(_, _) => Self::DateTime,
            _ => return None,
        })
    }

    /// The smallest dtype both `self` and `other` convert to without loss, as NumPy
    /// promotes them (`int64` with `uint64` gives `float64`, `int32` with `float32` gives
    /// `float64`). `None` when they do not mix (datetimes with numbers).
    pub fn promote(self, other: DType) -> Option<DType> {
        use DType::*;
        if self == other {
            return Some(self);
        }
        match (self, other) {
            (DateTime, _) | (_, DateTime) => None,
            (Bool, x) | (x, Bool) => Some(x),
            (a, b) if a.is_float() && b.is_float() => Some(F64),
            (f, i) | (i, f) if f.is_float() => {
                Some(if f == F32 && i.size() <= 2 { F32 } else { F64 })
            }
            (a, b) if a.is_signed() == b.is_signed() => {
                Some(if a.size() >= b.size() { a } else { b })
            }
            (s, u) | (u, s) if s.is_signed() => {
                // A signed type holds the unsigned one only when it is wider.
                Some(match u.size() {
                    1 => {
                        if s.size() > 1 {
                            s
                        } else {
                            I16
                        }
                    }
                    2 => {
                        if s.size() > 2 {
                            s
                        } else {
                            I32
                        }
                    }
                    4 => I64,
                    _ => F64,
                })
            }
            _ => None,
        }
    }

    /// The dtype true division and math functions give: floats stay, others become
    /// `float64`.
    pub fn float_result(self) -> DType {
        if self == Self::F32 {
            Self::F32
        } else {
            Self::F64
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A Rust type chunks are stored as: `u8` (also for bool), `i8`..`i64` (also for
/// datetimes), `u16`..`u64`, `f32`, `f64`.
pub trait Native:
    Copy
    + Default
    + PartialOrd
    + Send
    + Sync
    + fmt::Debug
    + 'static
    + NumCast
    + AsPrimitive<f64>
    + AsPrimitive<i64>
    + AsPrimitive<u64>
    + AsPrimitive<f32>
    + AsPrimitive<u8>
    + AsPrimitive<i8>
    + AsPrimitive<i16>
    + AsPrimitive<i32>
    + AsPrimitive<u16>
    + AsPrimitive<u32>
    + ArrowNativeType
{
    /// Its Arrow primitive type.
    type Arrow: ArrowPrimitiveType<Native = Self>;

    /// Whether the value is a float NaN (never for integers).
    fn is_nan(self) -> bool;
}

macro_rules! native {
    ($t:ty, $arrow:ty, int) => {
        impl Native for $t {
            type Arrow = $arrow;
            #[inline(always)]
            fn is_nan(self) -> bool {
                false
            }
        }
    };
    ($t:ty, $arrow:ty, float) => {
        impl Native for $t {
            type Arrow = $arrow;
            #[inline(always)]
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
        }
    };
}

native!(u8, UInt8Type, int);
native!(u16, UInt16Type, int);
native!(u32, UInt32Type, int);
native!(u64, UInt64Type, int);
native!(i8, Int8Type, int);
native!(i16, Int16Type, int);
native!(i32, Int32Type, int);
native!(i64, Int64Type, int);
native!(f32, Float32Type, float);
native!(f64, Float64Type, float);

/// Runs `$body` with `$t` bound to the storage type of dtype `$dtype`.
#[macro_export]
macro_rules! with_native {
    ($dtype:expr, $t:ident => $body:expr) => {{
        use $crate::DType as __D;
        match $dtype {
            __D::Bool | __D::U8 => {
                type $t = u8;
                $body
            }
            __D::U16 => {
                type $t = u16;
                $body
            }
            __D::U32 => {
                type $t = u32;
                $body
            }
            __D::U64 => {
                type $t = u64;
                $body
            }
            __D::I8 => {
                type $t = i8;
                $body
            }
            __D::I16 => {
                type $t = i16;
                $body
            }
            __D::I32 => {
                type $t = i32;
                $body
            }
            __D::I64 | __D::DateTime => {
                type $t = i64;
                $body
            }
            __D::F32 => {
                type $t = f32;
                $body
            }
            __D::F64 => {
                type $t = f64;
                $body
            }
        }
    }};
}

/// One value of some dtype: fill values, constants in expressions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Scalar {
    /// A boolean.
    Bool(bool),
    /// A signed integer (any width).
    Int(i64),
    /// An unsigned integer (any width).
    UInt(u64),
    /// A float, kept as its bits so NaN survives serialisation.
    Float(#[serde(with = "f64_bits")] f64),
    /// A datetime, nanoseconds since the epoch.
    DateTime(i64),
}

impl Scalar {
    /// The dtype NumPy gives a Python scalar of this kind.
    pub fn dtype(self) -> DType {
        match self {
            Self::Bool(_) => DType::Bool,
            Self::Int(_) => DType::I64,
            Self::UInt(_) => DType::U64,
            Self::Float(_) => DType::F64,
            Self::DateTime(_) => DType::DateTime,
        }
    }

    /// The value converted to `T` (as NumPy's `astype` does).
    pub fn to_native<T: Native>(self) -> T
    where
        f64: AsPrimitive<T>,
        i64: AsPrimitive<T>,
        u64: AsPrimitive<T>,
    {
        match self {
            Self::Bool(b) => (b as i64).as_(),
            Self::Int(v) | Self::DateTime(v) => v.as_(),
            Self::UInt(v) => v.as_(),
            Self::Float(v) => v.as_(),
        }
    }

    /// The value as `f64`.
    pub fn as_f64(self) -> f64 {
        match self {
            Self::Bool(b) => b as i64 as f64,
            Self::Int(v) | Self::DateTime(v) => v as f64,
            Self::UInt(v) => v as f64,
            Self::Float(v) => v,
        }
    }
}

impl From<f64> for Scalar {
    fn from(v: f64) -> Self {
        Self::Float(v)
    }
}

impl From<i64> for Scalar {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}

impl From<bool> for Scalar {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}

mod f64_bits {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(v.to_bits())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(f64::from_bits(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::DType::*;

    #[test]
    fn promotion_follows_numpy() {
        assert_eq!(I32.promote(F32), Some(F64));
        assert_eq!(I16.promote(F32), Some(F32));
        assert_eq!(I64.promote(U64), Some(F64));
        assert_eq!(I8.promote(U8), Some(I16));
        assert_eq!(U32.promote(I32), Some(I64));
        assert_eq!(U8.promote(U32), Some(U32));
        assert_eq!(Bool.promote(I8), Some(I8));
        assert_eq!(F32.promote(F64), Some(F64));
        assert_eq!(DateTime.promote(F64), None);
    }
}
