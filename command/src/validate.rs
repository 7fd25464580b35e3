//! Field rules of CONTRACT §3: each validator trims and normalises a value
//! or reports why it is invalid. Callers collect every [`FieldError`] of a
//! request, so a client learns about all bad fields at once.

use chrono::{NaiveDate, Utc};
use serde::Serialize;

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, message: &str) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Collects the field errors of one request.
#[derive(Debug, Default)]
pub struct Errors(pub Vec<FieldError>);

impl Errors {
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    /// Runs a validator; on error records it under `field` and returns `None`.
    pub fn check<T>(&mut self, field: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|m| self.add(field, m)).ok()
    }

    pub fn into_result<T>(self, value: T) -> Result<T, Vec<FieldError>> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self.0)
        }
    }
}

/// Trimmed text of `min..=max` characters.
pub fn text(value: &str, min: usize, max: usize) -> Result<String, String> {
    let t = value.trim();
    let n = t.chars().count();
    if n < min || n > max {
        return Err(if min == max {
            format!("must be {min} characters")
        } else {
            format!("must be {min} to {max} characters")
        });
    }
    if t.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(t.to_string())
}

pub fn name(value: &str) -> Result<String, String> {
    text(value, 1, 50)
}

/// A valid address; kept as written (trimmed), compared case-insensitively.
pub fn email(value: &str) -> Result<String, String> {
    let t = value.trim();
    if t.len() > 254 || !email_address::EmailAddress::is_valid(t) || !t.contains('.') {
        return Err("must be a valid email address".into());
    }
    Ok(t.to_string())
}

/// E.164: `+` and 7..=15 digits once spaces, dashes and parentheses are gone.
pub fn mobile(value: &str) -> Result<String, String> {
    let n: String = value.chars().filter(|c| !matches!(c, ' ' | '-' | '(' | ')')).collect();
    let digits = n.strip_prefix('+').unwrap_or("");
    if !(7..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("must be an E.164 number: + and 7 to 15 digits".into());
    }
    Ok(n)
}

/// ISO 3166-1 alpha-2, normalised to upper case.
pub fn country(value: &str) -> Result<String, String> {
    let c = value.trim().to_ascii_uppercase();
    if c.len() == 2 && ISO_3166_ALPHA2.split(' ').any(|x| x == c) {
        Ok(c)
    } else {
        Err("must be an ISO 3166-1 alpha-2 country code".into())
    }
}

/// A well-formed BCP 47 language tag.
pub fn locale(value: &str) -> Result<String, String> {
    let t = value.trim();
    if t.len() > 35 {
        return Err("must be a BCP 47 language tag of at most 35 characters".into());
    }
    match language_tags::LanguageTag::parse(t) {
        Ok(tag) if tag.is_valid() => Ok(t.to_string()),
        _ => Err("must be a BCP 47 language tag such as en-US".into()),
    }
}

/// A real date, not in the future.
pub fn date_of_birth(date: NaiveDate) -> Result<NaiveDate, String> {
    if date > Utc::now().date_naive() {
        Err("must not be in the future".into())
    } else {
        Ok(date)
    }
}

/// Security answers are compared after trimming, collapsing inner
/// whitespace and case-folding.
pub fn normalise_answer(answer: &str) -> String {
    answer.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

const ISO_3166_ALPHA2: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ \
BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM \
DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK \
HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK \
LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI \
NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI \
SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ \
VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mobile_is_normalised_to_e164() {
        assert_eq!(mobile("+971 (50) 123-4567").as_deref(), Ok("+971501234567"));
        assert!(mobile("0501234567").is_err());
        assert!(mobile("+12345").is_err());
        assert!(mobile("+1234567890123456").is_err());
        assert!(mobile("+97150abc4567").is_err());
    }

    #[test]
    fn countries_locales_and_emails() {
        assert_eq!(country("ae").as_deref(), Ok("AE"));
        assert!(country("XX").is_err());
        assert!(country("ARE").is_err());
        assert!(locale("en-US").is_ok());
        assert!(locale("zh-Hant-TW").is_ok());
        assert!(locale("not a locale").is_err());
        assert!(email("john.doe@example.com").is_ok());
        assert!(email("john.doe").is_err());
        assert!(email("a@b").is_err());
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(name("  John ").as_deref(), Ok("John"));
        assert!(name("   ").is_err());
        assert!(name(&"x".repeat(51)).is_err());
        assert!(name(&"é".repeat(50)).is_ok());
    }

    #[test]
    fn answers_are_normalised() {
        assert_eq!(normalise_answer("  St.  Mary's\tSchool "), "st. mary's school");
    }
}
