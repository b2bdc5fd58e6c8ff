//! Exact conversion between decimal text and fixed-point integers, for gateways and configuration.
//! No floats: `"0.00001"` at scale 8 is exactly `1000`; text with more fractional digits than the
//! scale allows, signs, exponents or values beyond `u64` are errors, never rounded.

/// Why decimal text was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    /// Empty, or characters other than digits and one dot.
    #[error("not a plain decimal number")]
    Malformed,
    /// More fractional digits than the scale.
    #[error("more than {0} decimal places")]
    TooPrecise(u8),
    /// Larger than `u64::MAX` minor units.
    #[error("number too large")]
    Overflow,
}

/// Parses unsigned decimal text into an integer number of `10^-scale` units.
///
/// # Errors
/// See [`DecimalError`].
pub fn parse_fixed(text: &str, scale: u8) -> Result<u64, DecimalError> {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (text, ""),
    };
    if (whole.is_empty() && fraction.is_empty())
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
        || (text.contains('.') && (whole.is_empty() || fraction.is_empty()))
    {
        return Err(DecimalError::Malformed);
    }
    let significant_fraction = fraction.trim_end_matches('0');
    if significant_fraction.len() > usize::from(scale) {
        return Err(DecimalError::TooPrecise(scale));
    }
    let mut value: u64 = 0;
    for digit in whole.bytes() {
        value =
            value.checked_mul(10).and_then(|v| v.checked_add(u64::from(digit - b'0'))).ok_or(DecimalError::Overflow)?;
    }
    for index in 0..usize::from(scale) {
        let digit = significant_fraction.as_bytes().get(index).map_or(0, |d| d - b'0');
        value = value.checked_mul(10).and_then(|v| v.checked_add(u64::from(digit))).ok_or(DecimalError::Overflow)?;
    }
    Ok(value)
}

/// Formats an integer number of `10^-scale` units as decimal text with exactly `scale`
/// fractional digits (`format_fixed(1000, 8)` is `"0.00001000"`).
pub fn format_fixed(value: u64, scale: u8) -> String {
    let divisor = 10u128.pow(u32::from(scale));
    let whole = u128::from(value) / divisor;
    let fraction = u128::from(value) % divisor;
    if scale == 0 { whole.to_string() } else { format!("{whole}.{fraction:0width$}", width = usize::from(scale)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exactly() {
        assert_eq!(parse_fixed("0.00001", 8), Ok(1_000));
        assert_eq!(parse_fixed("12", 2), Ok(1_200));
        assert_eq!(parse_fixed("12.50", 1), Ok(125), "trailing zeros beyond the scale are fine");
        assert_eq!(parse_fixed("0", 6), Ok(0));
        assert_eq!(parse_fixed("18446744073709551615", 0), Ok(u64::MAX));
    }

    #[test]
    fn refuses_what_does_not_fit() {
        assert_eq!(parse_fixed("0.001", 2), Err(DecimalError::TooPrecise(2)));
        assert_eq!(parse_fixed("18446744073709551616", 0), Err(DecimalError::Overflow));
        assert_eq!(parse_fixed("184467440737095517", 2), Err(DecimalError::Overflow));
        for bad in ["", ".", "1.", ".5", "-1", "+1", "1e5", "1.2.3", " 1", "0x10", "１"] {
            assert_eq!(parse_fixed(bad, 4), Err(DecimalError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn formats_with_fixed_places() {
        assert_eq!(format_fixed(1_000, 8), "0.00001000");
        assert_eq!(format_fixed(125, 1), "12.5");
        assert_eq!(format_fixed(u64::MAX, 0), "18446744073709551615");
        assert_eq!(format_fixed(u64::MAX, 18), "18.446744073709551615");
    }
}
