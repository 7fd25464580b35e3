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

/// A field's rule: the value trimmed and normalised, or why it is invalid.
pub type Rule = fn(&str) -> Result<String, String>;

/// The rule of every text field of a user (CONTRACT §3), in one place:
/// enrollment, the merge patch, the other user routes and any other door
/// read a field through these.
pub mod field {
    use super::{country, email, locale, mobile, name, text, Rule};

    pub const FIRST_NAME: Rule = name;
    pub const LAST_NAME: Rule = name;
    pub const EMAIL: Rule = email;
    pub const MOBILE: Rule = mobile;
    pub const OFFICE_PHONE: Rule = |v| text(v, 1, 30);
    pub const OFFICE_EXTENSION: Rule = |v| text(v, 1, 10);
    pub const EMPLOYEE_ID: Rule = |v| text(v, 1, 100);
    pub const GENDER: Rule = |v| text(v, 1, 50);
    pub const NATIONALITY: Rule = country;
    pub const LOCALE: Rule = locale;
    pub const EXTERNAL_REF_ID: Rule = |v| text(v, 1, 100);
    pub const EXTERNAL_REF_TYPE: Rule = |v| text(v, 1, 50);
    /// `line1`, `line2`, `city`, `region` of an address.
    pub const ADDRESS_LINE: Rule = |v| text(v, 1, 100);
    pub const POSTAL_CODE: Rule = |v| text(v, 1, 20);
    pub const COUNTRY: Rule = country;
    pub const STATUS_REASON: Rule = |v| text(v, 1, 200);
    pub const KYC_ID: Rule = |v| text(v, 1, 100);
    /// Every field of an account (`account_id`, its type, status, product
    /// code and program identifier).
    pub const ACCOUNT: Rule = |v| text(v, 1, 100);
    pub const QUESTION_CODE: Rule = |v| text(v, 1, QUESTION_CODE_MAX);

    /// Longest security question code, in characters.
    pub const QUESTION_CODE_MAX: usize = 50;
    /// Longest (normalised) security answer, in characters.
    pub const ANSWER_MAX: usize = 200;

    /// A security answer, normalised (see [`super::normalise_answer`]):
    /// 1 to [`ANSWER_MAX`] characters.
    pub fn answer(value: &str) -> Result<String, String> {
        let answer = super::normalise_answer(value);
        if answer.is_empty() || answer.chars().count() > ANSWER_MAX {
            Err(format!("must be 1 to {ANSWER_MAX} characters"))
        } else {
            Ok(answer)
        }
    }

    /// A password: 8 to 128 characters, kept exactly as sent.
    pub fn password(value: &str) -> Result<String, String> {
        if (8..=128).contains(&value.chars().count()) {
            Ok(value.to_string())
        } else {
            Err("must be 8 to 128 characters".into())
        }
    }
}

/// The rules that span a user's fields, each in one place.
pub mod across {
    use super::FieldError;

    /// A user keeps an email or an external reference.
    pub fn identifier(email: bool, external_ref: bool) -> Option<FieldError> {
        (!email && !external_ref).then(|| FieldError::new("email", "email or external_ref is required"))
    }

    /// A password logs in with the email: none without one.
    pub fn password_needs_email(password: bool, email: bool) -> Option<FieldError> {
        (password && !email).then(|| FieldError::new("password", "a password needs an email to log in with"))
    }

    /// The email cannot go while a password needs it.
    pub fn email_kept_for_password(email: bool, password: bool) -> Option<FieldError> {
        (!email && password).then(|| FieldError::new("email", "cannot be cleared while the user has a password"))
    }
}

impl Errors {
    /// Records a cross-field rule's error, if any.
    pub fn rule(&mut self, broken: Option<FieldError>) {
        self.0.extend(broken);
    }
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
