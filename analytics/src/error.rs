//! The crate's one error type.

/// Why a setting, a calendar or an input was refused. Every variant names what to fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AnalyticsError {
    /// A configuration value is outside what the rule can work with.
    #[error("{field} = {value} is invalid: {expected}")]
    InvalidSetting {
        /// The setting, e.g. `rating_va`.
        field: &'static str,
        /// The offending value, formatted.
        value: String,
        /// What would be accepted.
        expected: &'static str,
    },
    /// An input series or observation cannot be used.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A tariff period is malformed (empty name, no days, minutes out of order …).
    #[error("tariff period {index} ({bucket}): {reason}")]
    TariffPeriod {
        /// Position of the period in the calendar.
        index: usize,
        /// Its bucket name.
        bucket: String,
        /// What is wrong.
        reason: String,
    },
    /// Two tariff periods claim the same time.
    #[error(
        "tariff periods {first} and {second} overlap on {weekday} in month {month} \
         from minute {minute} of the day"
    )]
    TariffOverlap {
        /// Month 1..=12.
        month: u8,
        /// Weekday name.
        weekday: &'static str,
        /// First minute of the day claimed twice.
        minute: u16,
        /// One bucket.
        first: String,
        /// The other bucket.
        second: String,
    },
    /// No tariff period covers some time.
    #[error(
        "no tariff period covers {weekday} in month {month} from minute {from_minute} to \
         {to_minute} of the day"
    )]
    TariffGap {
        /// Month 1..=12.
        month: u8,
        /// Weekday name.
        weekday: &'static str,
        /// First uncovered minute.
        from_minute: u16,
        /// First covered minute after the gap (1440 = midnight).
        to_minute: u16,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = AnalyticsError> = std::result::Result<T, E>;

/// An [`AnalyticsError::InvalidSetting`] for `field`.
pub(crate) fn invalid(
    field: &'static str,
    value: impl std::fmt::Display,
    expected: &'static str,
) -> AnalyticsError {
    AnalyticsError::InvalidSetting {
        field,
        value: value.to_string(),
        expected,
    }
}

/// Checks that a window count is at least one.
pub(crate) fn require_count(field: &'static str, value: u32) -> Result<u32> {
    if value >= 1 {
        Ok(value)
    } else {
        Err(invalid(field, value, "must be at least 1"))
    }
}
