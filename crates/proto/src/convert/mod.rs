//! Conversions between core and wire types.
//!
//! - core → wire: `From<core::X> for v1::X`, infallible. Types that are sent
//!   from a shared state (tasks, services, nodes, stack specs, events, and
//!   everything they contain) also convert from a reference, `From<&core::X>`;
//!   the owned form delegates to it.
//! - wire → core: `TryFrom<v1::X> for core::X` with [`ConvertError`]: a wire
//!   message may lack a sub-message (proto3 makes every message field
//!   optional), carry an enum value this version does not know, or a number
//!   too large for its core type.
//!
//! Every message field whose core counterpart is not an `Option` is
//! required: its absence is [`ConvertError::Missing`], never a default. A
//! zero (`*_UNSPECIFIED`) enum value without a core counterpart is treated
//! the same way.
//!
//! Field names in errors are `Message.field` (`"ServiceSpec.task"`).

mod event;
mod network;
mod node;
mod service;
mod stack;
mod task;

pub use stack::registry_credential;

#[cfg(test)]
mod tests;

/// A wire message that does not make a valid domain value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConvertError {
    /// A required field is absent.
    #[error("missing field {0}")]
    Missing(&'static str),
    /// An enum field holds a value this version does not know.
    #[error("unknown value {value} for {field}")]
    UnknownEnum {
        /// Field name.
        field: &'static str,
        /// The value received.
        value: i32,
    },
    /// A text field holds a value this version does not know.
    #[error("unknown value {value:?} for {field}")]
    Invalid {
        /// Field name.
        field: &'static str,
        /// The value received.
        value: String,
    },
    /// A number is out of range (e.g. a port above 65535).
    #[error("{field} out of range: {value}")]
    OutOfRange {
        /// Field name.
        field: &'static str,
        /// The value received.
        value: u64,
    },
}

/// The value of a required field, or [`ConvertError::Missing`].
fn required<T>(field: &'static str, value: Option<T>) -> Result<T, ConvertError> {
    value.ok_or(ConvertError::Missing(field))
}

/// A required sub-message converted to its core type.
fn required_into<W, C>(field: &'static str, value: Option<W>) -> Result<C, ConvertError>
where
    C: TryFrom<W, Error = ConvertError>,
{
    C::try_from(required(field, value)?)
}

/// Decodes the `i32` of an enum field into its generated enum, or
/// [`ConvertError::UnknownEnum`].
fn wire_enum<W: TryFrom<i32>>(field: &'static str, value: i32) -> Result<W, ConvertError> {
    W::try_from(value).map_err(|_| ConvertError::UnknownEnum { field, value })
}

/// A `u32` port narrowed to `u16`, or [`ConvertError::OutOfRange`].
fn port(field: &'static str, value: u32) -> Result<u16, ConvertError> {
    u16::try_from(value).map_err(|_| ConvertError::OutOfRange { field, value: u64::from(value) })
}

/// Converts every value of a map, keeping the keys (and changing the map type).
fn try_map_values<K, W, C, I, O>(map: I) -> Result<O, ConvertError>
where
    I: IntoIterator<Item = (K, W)>,
    C: TryFrom<W, Error = ConvertError>,
    O: FromIterator<(K, C)>,
{
    map.into_iter().map(|(k, v)| Ok((k, C::try_from(v)?))).collect()
}

/// Converts every element of a list.
fn try_vec<W, C>(list: Vec<W>) -> Result<Vec<C>, ConvertError>
where
    C: TryFrom<W, Error = ConvertError>,
{
    list.into_iter().map(C::try_from).collect()
}

/// Copies a string map into another map type (`BTreeMap` ↔ `HashMap`).
fn string_map<'a, I, O>(map: I) -> O
where
    I: IntoIterator<Item = (&'a String, &'a String)>,
    O: FromIterator<(String, String)>,
{
    map.into_iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Implements `From<core::X> for v1::X` by delegating to `From<&core::X>`.
macro_rules! from_owned {
    ($($core:ty => $wire:ty),* $(,)?) => {
        $(
            impl From<$core> for $wire {
                fn from(value: $core) -> Self {
                    Self::from(&value)
                }
            }
        )*
    };
}
use from_owned;
