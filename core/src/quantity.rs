//! Kubernetes resource quantities (`500m`, `64Mi`, `1.5G`, `2e3`), parsed exactly as apimachinery's
//! `resource.Quantity` reads them, into thousandths of the unit. One parser for the apiserver's validation, the
//! scheduler, quota and the node agent.

use std::str::FromStr;

/// A parsed quantity, held in thousandths of its unit (millicores for CPU, millibytes for memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity {
    milli: i128,
}

/// Why a text is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Not of the form number + suffix.
    #[error(
        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    )]
    Format,
    /// Too large to hold (past 10^35 units).
    #[error("quantity is too large")]
    TooLarge,
}

/// The largest magnitude held, in thousandths: 10^38, well past any real resource (1Ei is ~1.2 * 10^21).
const LIMIT: i128 = 10i128.pow(38);

impl Quantity {
    /// The value in thousandths of the unit, rounded up as Kubernetes' `MilliValue`.
    pub fn milli(self) -> i128 {
        self.milli
    }

    /// The value in whole units, rounded up as Kubernetes' `Value` (`1.5` → 2, `100m` → 1).
    pub fn value(self) -> i128 {
        self.milli.div_euclid(1000) + i128::from(self.milli.rem_euclid(1000) != 0)
    }

    /// The value in whole units as an i64, saturating.
    pub fn value_i64(self) -> i64 {
        i64::try_from(self.value()).unwrap_or(if self.milli < 0 { i64::MIN } else { i64::MAX })
    }

    /// The value in thousandths as an i64, saturating.
    pub fn milli_i64(self) -> i64 {
        i64::try_from(self.milli).unwrap_or(if self.milli < 0 { i64::MIN } else { i64::MAX })
    }

    /// Parses a quantity.
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        let (negative, rest) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        let number_end = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(number_end);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(QuantityError::Format);
        }
        let (mut ten, two) = suffix_exponents(suffix)?;
        let digits = format!("{whole}{fraction}");
        let digits = digits.trim_start_matches('0');
        if digits.len() > 38 {
            return Err(QuantityError::TooLarge);
        }
        let mantissa: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| QuantityError::Format)?
        };
        // value = mantissa * 10^(ten - fraction digits) * 2^two; thousandths add 3 to the power of ten.
        ten = ten - fraction.len() as i64 + 3;
        let milli = scale(mantissa, ten, two)?;
        Ok(Self {
            milli: if negative { -milli } else { milli },
        })
    }
}

/// The powers of ten and two a suffix stands for: `Ki` = 2^10, `k` = 10^3, `m` = 10^-3, `e3` = 10^3.
fn suffix_exponents(suffix: &str) -> Result<(i64, u32), QuantityError> {
    Ok(match suffix {
        "" => (0, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        exponent => {
            let digits = exponent
                .strip_prefix('e')
                .or_else(|| exponent.strip_prefix('E'))
                .ok_or(QuantityError::Format)?;
            let unsigned = digits.trim_start_matches(['+', '-']);
            if unsigned.is_empty()
                || digits.len() - unsigned.len() > 1
                || !unsigned.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(QuantityError::Format);
            }
            let negative = digits.starts_with('-');
            // Past ±1000 a power of ten only says "too large" or "rounds up to one thousandth".
            let power = unsigned.parse::<i64>().unwrap_or(i64::MAX).min(1000);
            if negative {
                (-power, 0)
            } else if power == 1000 {
                return Err(QuantityError::TooLarge);
            } else {
                (power, 0)
            }
        }
    })
}

/// `mantissa * 10^ten * 2^two`, rounded up, or TooLarge past the limit.
fn scale(mantissa: i128, ten: i64, two: u32) -> Result<i128, QuantityError> {
    if mantissa == 0 {
        return Ok(0);
    }
    let too_large = || QuantityError::TooLarge;
    let shifted = mantissa
        .checked_mul(2i128.checked_pow(two).ok_or_else(too_large)?)
        .ok_or_else(too_large)?;
    let value = if ten >= 0 {
        let power = u32::try_from(ten).map_err(|_| too_large())?;
        shifted
            .checked_mul(10i128.checked_pow(power).ok_or_else(too_large)?)
            .ok_or_else(too_large)?
    } else {
        match u32::try_from(-ten).ok().and_then(|p| 10i128.checked_pow(p)) {
            Some(divisor) => shifted / divisor + i128::from(shifted % divisor != 0),
            // Smaller than a thousandth: rounds up to one.
            None => 1,
        }
    };
    if value > LIMIT {
        return Err(too_large());
    }
    Ok(value)
}

/// A value in thousandths of its unit written as Kubernetes writes such a quantity: `2`, `1500m`.
pub fn milli_text(milli: i64) -> String {
    if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

/// A quantity's thousandths (millicores of a CPU amount), saturating; 0 for a malformed one, which the
/// apiserver never admits.
pub fn milli_of(text: &str) -> i64 {
    Quantity::parse(text).map_or(0, Quantity::milli_i64)
}

/// A quantity in whole units (bytes of a memory amount), rounded up and saturating; 0 for a malformed one.
pub fn value_of(text: &str) -> i64 {
    Quantity::parse(text).map_or(0, Quantity::value_i64)
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(text: &str) -> Result<Self, QuantityError> {
        Self::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn milli(text: &str) -> i128 {
        Quantity::parse(text).unwrap().milli()
    }

    #[test]
    fn decimal_binary_and_exponent_suffixes_scale_the_number() {
        assert_eq!(milli("500m"), 500);
        assert_eq!(milli("0.5"), 500);
        assert_eq!(milli("2"), 2000);
        assert_eq!(milli("64Mi"), (64 << 20) * 1000);
        assert_eq!(milli("1.5Ki"), 1536 * 1000);
        assert_eq!(milli("1G"), 1_000_000_000_000);
        assert_eq!(milli("2e3"), 2_000_000);
        assert_eq!(milli("1E"), 10i128.pow(21));
        assert_eq!(milli("+1k"), 1_000_000);
        assert_eq!(milli("-1"), -1000);
        assert_eq!(milli(".5"), 500);
    }

    #[test]
    fn values_round_up_as_kubernetes_does() {
        // 1n is a millionth of a thousandth: still one thousandth.
        assert_eq!(milli("1n"), 1);
        assert_eq!(Quantity::parse("100m").unwrap().value(), 1);
        assert_eq!(Quantity::parse("1.5").unwrap().value(), 2);
        assert_eq!(Quantity::parse("3").unwrap().value(), 3);
    }

    #[test]
    fn malformed_quantities_are_refused() {
        for bad in [
            "",
            "m",
            "12parsecs",
            "1.2.3",
            "1Kib",
            "1e",
            "1e+-3",
            "1 Gi",
            "--1",
            "1m1",
        ] {
            assert_eq!(Quantity::parse(bad), Err(QuantityError::Format), "{bad:?}");
        }
    }

    #[test]
    fn absurd_quantities_are_too_large_not_a_panic() {
        assert_eq!(Quantity::parse("1e400"), Err(QuantityError::TooLarge));
        assert_eq!(
            Quantity::parse(&"9".repeat(60)),
            Err(QuantityError::TooLarge)
        );
        assert_eq!(
            Quantity::parse("1e99999999999999999999"),
            Err(QuantityError::TooLarge)
        );
        assert_eq!(milli("1e-400"), 1);
        assert_eq!(Quantity::parse("1Ei").unwrap().value_i64(), 1 << 60);
    }
}
