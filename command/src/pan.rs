//! Primary account numbers, in the spirit of PCI DSS 3.4: a Luhn-valid PAN
//! is generated from the product's BIN, its last four digits are kept, and
//! the full number lives only inside a [`Pan`] for the instant it takes to
//! read them; it is wiped when dropped and never printed.

use rand::Rng;
use std::fmt;

/// The BIN used when a product names none (a test range of the Visa BIN space).
pub const DEFAULT_BIN: &str = "400000";
/// Length of generated PANs.
pub const PAN_LENGTH: usize = 16;

pub struct Pan([u8; PAN_LENGTH]);

impl Pan {
    /// A random Luhn-valid PAN starting with `bin` (6..=8 digits).
    pub fn generate(bin: &str, rng: &mut impl Rng) -> Pan {
        let mut digits = [0u8; PAN_LENGTH];
        let bin: Vec<u8> = bin.bytes().filter(u8::is_ascii_digit).map(|b| b - b'0').collect();
        for (i, d) in digits.iter_mut().enumerate().take(PAN_LENGTH - 1) {
            *d = bin.get(i).copied().unwrap_or_else(|| rng.gen_range(0..10));
        }
        digits[PAN_LENGTH - 1] = luhn_check_digit(&digits[..PAN_LENGTH - 1]);
        Pan(digits)
    }

    pub fn last4(&self) -> String {
        self.0[PAN_LENGTH - 4..].iter().map(|d| char::from(b'0' + d)).collect()
    }

    #[cfg(test)]
    fn digits(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Pan {
    fn drop(&mut self) {
        // Best effort: the number does not outlive its use.
        for d in self.0.iter_mut() {
            wipe(d);
        }
    }
}

#[inline(never)]
fn wipe(d: &mut u8) {
    *std::hint::black_box(d) = 0;
}

impl fmt::Debug for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pan(****{})", self.last4())
    }
}

/// The digit that makes `payload` followed by it pass the Luhn check.
pub fn luhn_check_digit(payload: &[u8]) -> u8 {
    let sum: u32 = payload
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = d as u32;
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

/// Whether a string of digits passes the Luhn check.
pub fn luhn_valid(number: &str) -> bool {
    let digits: Vec<u8> = number.bytes().map(|b| b.wrapping_sub(b'0')).collect();
    if digits.len() < 2 || digits.iter().any(|d| *d > 9) {
        return false;
    }
    let (payload, check) = digits.split_at(digits.len() - 1);
    luhn_check_digit(payload) == check[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_pans_are_luhn_valid_and_start_with_the_bin() {
        let mut rng = rand::thread_rng();
        for bin in ["400000", "52345678", DEFAULT_BIN] {
            for _ in 0..200 {
                let pan = Pan::generate(bin, &mut rng);
                let text: String = pan.digits().iter().map(|d| char::from(b'0' + d)).collect();
                assert!(text.starts_with(bin));
                assert_eq!(text.len(), PAN_LENGTH);
                assert!(luhn_valid(&text), "{text}");
                assert_eq!(pan.last4(), text[12..]);
                assert_eq!(format!("{pan:?}"), format!("Pan(****{})", &text[12..]));
            }
        }
    }

    #[test]
    fn luhn_known_numbers() {
        assert!(luhn_valid("4111111111111111"));
        assert!(luhn_valid("79927398713"));
        assert!(!luhn_valid("4111111111111112"));
        assert!(!luhn_valid("41111111111a1111"));
    }
}
