//! Integers between Rust and SQL, checked both ways. Both databases store BIGINT (i64);
//! custody's sizes, sequence numbers, epochs and indices are unsigned. A value read back that
//! does not fit its type (a negative size or sequence number in a tampered database) is
//! [`StoreError::Corrupt`], never a silently wrapped number; a value too large to store is an
//! encoding error, never a negative one. The cast lints (`clippy::cast_*`, on for this crate)
//! keep `as` out.

use std::fmt::Display;

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Result, StoreError};

/// Column `column` of `row`: an integer that must fit `T` (for unsigned `T`: not negative).
pub(crate) fn get_uint<T: TryFrom<i64>>(row: &AnyRow, column: &str) -> Result<T> {
    let value: i64 = row.try_get(column)?;
    uint(value, column)
}

/// `value`, read from `what`, as `T`.
pub(crate) fn uint<T: TryFrom<i64>>(value: i64, what: &str) -> Result<T> {
    T::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} is {value}, out of range")))
}

/// `value` as the databases' integer.
pub(crate) fn db_int<T: TryInto<i64> + Copy + Display>(value: T) -> Result<i64> {
    value.try_into().map_err(|_| {
        StoreError::Db(sqlx::Error::Encode(
            format!("{value} does not fit a database integer").into(),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_and_oversized_values_are_errors_not_wrapped_numbers() {
        assert_eq!(uint::<u64>(5, "x").unwrap(), 5);
        let err = uint::<u64>(-1, "files.size").unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt(m) if m.contains("files.size is -1")),
            "{err}"
        );
        assert!(uint::<u32>(i64::from(u32::MAX) + 1, "parts").is_err());
        assert!(uint::<u8>(256, "level").is_err());
        assert_eq!(db_int(7u64).unwrap(), 7);
        assert_eq!(db_int(u64::try_from(i64::MAX).unwrap()).unwrap(), i64::MAX);
        assert!(db_int(u64::MAX).is_err());
    }
}
