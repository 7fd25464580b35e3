//! `PATCH /v1/users/{id}` as typed values: a JSON merge patch (RFC 7396)
//! of the profile, read once at the edge into a [`Patch`] per field —
//! absent, `null` or a value that already passed its field's rule — and
//! applied to the current profile by the aggregate, which checks only what
//! spans fields (a user keeps an identifier; a merged address is whole).

use crate::validate::{across, field, Errors, FieldError, Rule};
use chrono::NaiveDate;
use roster_events::user::{Address, CommunicationPreferences, ExternalRef, Profile};
use serde::{Deserialize, Deserializer};

/// One field of a merge patch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Patch<T> {
    /// Not in the patch: unchanged.
    #[default]
    Absent,
    /// `null`: cleared.
    Null,
    Value(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Patch<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Option::<T>::deserialize(d)?.map_or(Patch::Null, Patch::Value))
    }
}

impl<T> Patch<T> {
    /// `None`: absent; `Some(None)`: `null`; `Some(Some(v))`: a value.
    pub fn into_option(self) -> Option<Option<T>> {
        match self {
            Patch::Absent => None,
            Patch::Null => Some(None),
            Patch::Value(v) => Some(Some(v)),
        }
    }

    /// The field after the patch, given its value before.
    fn apply(self, current: Option<T>) -> Option<T> {
        match self {
            Patch::Absent => current,
            Patch::Null => None,
            Patch::Value(v) => Some(v),
        }
    }

    fn map<U>(self, f: impl FnOnce(T) -> U) -> Patch<U> {
        match self {
            Patch::Absent => Patch::Absent,
            Patch::Null => Patch::Null,
            Patch::Value(v) => Patch::Value(f(v)),
        }
    }

    /// Checks (and normalises) a value with its field's rule.
    fn check<U>(self, errors: &mut Errors, field: &str, rule: impl FnOnce(T) -> Result<U, String>) -> Patch<U> {
        match self {
            Patch::Absent => Patch::Absent,
            Patch::Null => Patch::Null,
            Patch::Value(v) => errors.check(field, rule(v)).map_or(Patch::Absent, Patch::Value),
        }
    }
}

impl Patch<String> {
    fn text(self, errors: &mut Errors, field: &str, rule: Rule) -> Patch<String> {
        self.check(errors, field, |v| rule(&v))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalRefPatch {
    #[serde(default)]
    id: Patch<String>,
    #[serde(default, rename = "type")]
    kind: Patch<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressPatch {
    #[serde(default)]
    line1: Patch<String>,
    #[serde(default)]
    line2: Patch<String>,
    #[serde(default)]
    city: Patch<String>,
    #[serde(default)]
    region: Patch<String>,
    #[serde(default)]
    postal_code: Patch<String>,
    #[serde(default)]
    country: Patch<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreferencesPatch {
    #[serde(default)]
    email: Patch<bool>,
    #[serde(default)]
    sms: Patch<bool>,
    #[serde(default)]
    post: Patch<bool>,
}

/// A merge patch of the profile whose every value obeys its field's rule
/// (made only by [`ProfilePatch::checked`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfilePatch {
    #[serde(default)]
    external_ref: Patch<ExternalRefPatch>,
    #[serde(default)]
    first_name: Patch<String>,
    #[serde(default)]
    last_name: Patch<String>,
    #[serde(default)]
    email: Patch<String>,
    #[serde(default)]
    email_verified: Patch<bool>,
    #[serde(default)]
    mobile: Patch<String>,
    #[serde(default)]
    office_phone: Patch<String>,
    #[serde(default)]
    office_extension: Patch<String>,
    #[serde(default)]
    employee_id: Patch<String>,
    #[serde(default)]
    date_of_birth: Patch<NaiveDate>,
    #[serde(default)]
    gender: Patch<String>,
    #[serde(default)]
    nationality: Patch<String>,
    #[serde(default)]
    locale: Patch<String>,
    #[serde(default)]
    address: Patch<AddressPatch>,
    #[serde(default)]
    billing_address: Patch<AddressPatch>,
    #[serde(default)]
    communication_preferences: Patch<PreferencesPatch>,
}

impl ProfilePatch {
    /// The patch, once every value obeys its field's rule (each bad field
    /// reported): the only way a door makes one from what it read.
    pub fn checked(self) -> Result<ProfilePatch, Vec<FieldError>> {
        let mut e = Errors::default();
        let patch = self.check_fields(&mut e);
        e.into_result(patch)
    }

    fn check_fields(self, e: &mut Errors) -> ProfilePatch {
        ProfilePatch {
            external_ref: self.external_ref.map(|r| ExternalRefPatch {
                id: r.id.text(e, "external_ref.id", field::EXTERNAL_REF_ID),
                kind: r.kind.text(e, "external_ref.type", field::EXTERNAL_REF_TYPE),
            }),
            first_name: self.first_name.text(e, "first_name", field::FIRST_NAME),
            last_name: self.last_name.text(e, "last_name", field::LAST_NAME),
            email: self.email.text(e, "email", field::EMAIL),
            email_verified: self.email_verified,
            mobile: self.mobile.text(e, "mobile", field::MOBILE),
            office_phone: self.office_phone.text(e, "office_phone", field::OFFICE_PHONE),
            office_extension: self
                .office_extension
                .text(e, "office_extension", field::OFFICE_EXTENSION),
            employee_id: self.employee_id.text(e, "employee_id", field::EMPLOYEE_ID),
            date_of_birth: self
                .date_of_birth
                .check(e, "date_of_birth", crate::validate::date_of_birth),
            gender: self.gender.text(e, "gender", field::GENDER),
            nationality: self.nationality.text(e, "nationality", field::NATIONALITY),
            locale: self.locale.text(e, "locale", field::LOCALE),
            address: self.address.map(|a| a.checked(e, "address")),
            billing_address: self.billing_address.map(|a| a.checked(e, "billing_address")),
            communication_preferences: self.communication_preferences,
        }
    }

    /// The profile after this patch. What spans fields is checked here: a
    /// user keeps an email or an external reference, and an object merged
    /// into nothing must be whole.
    pub fn apply(self, current: &Profile) -> Result<Profile, Vec<FieldError>> {
        let mut e = Errors::default();
        let c = current.clone();
        let external_ref = match self.external_ref {
            Patch::Absent => c.external_ref,
            Patch::Null => None,
            Patch::Value(r) => {
                let (id, kind) = c.external_ref.map(|r| (r.id, r.kind)).unzip();
                let id = r.id.apply(id);
                let kind = r.kind.apply(kind);
                required(&mut e, "external_ref.id", id.is_some());
                required(&mut e, "external_ref.type", kind.is_some());
                id.zip(kind).map(|(id, kind)| ExternalRef { id, kind })
            }
        };
        let profile = Profile {
            external_ref,
            first_name: self.first_name.apply(c.first_name),
            last_name: self.last_name.apply(c.last_name),
            email: self.email.apply(c.email),
            email_verified: self.email_verified.apply(Some(c.email_verified)).unwrap_or(false),
            mobile: self.mobile.apply(c.mobile),
            office_phone: self.office_phone.apply(c.office_phone),
            office_extension: self.office_extension.apply(c.office_extension),
            employee_id: self.employee_id.apply(c.employee_id),
            date_of_birth: self.date_of_birth.apply(c.date_of_birth),
            gender: self.gender.apply(c.gender),
            nationality: self.nationality.apply(c.nationality),
            locale: self.locale.apply(c.locale),
            address: AddressPatch::merge(self.address, c.address, &mut e, "address"),
            billing_address: AddressPatch::merge(self.billing_address, c.billing_address, &mut e, "billing_address"),
            communication_preferences: match self.communication_preferences {
                Patch::Absent => c.communication_preferences,
                Patch::Null => CommunicationPreferences::default(),
                Patch::Value(p) => {
                    let was = c.communication_preferences;
                    CommunicationPreferences {
                        email: p.email.apply(Some(was.email)).unwrap_or(false),
                        sms: p.sms.apply(Some(was.sms)).unwrap_or(false),
                        post: p.post.apply(Some(was.post)).unwrap_or(false),
                    }
                }
            },
        };
        e.rule(across::identifier(
            profile.email.is_some(),
            profile.external_ref.is_some(),
        ));
        e.into_result(profile)
    }
}

fn required(e: &mut Errors, field: &str, present: bool) {
    if !present {
        e.add(field, "is required");
    }
}

impl AddressPatch {
    fn checked(self, e: &mut Errors, path: &str) -> AddressPatch {
        let at = |name: &str| format!("{path}.{name}");
        AddressPatch {
            line1: self.line1.text(e, &at("line1"), field::ADDRESS_LINE),
            line2: self.line2.text(e, &at("line2"), field::ADDRESS_LINE),
            city: self.city.text(e, &at("city"), field::ADDRESS_LINE),
            region: self.region.text(e, &at("region"), field::ADDRESS_LINE),
            postal_code: self.postal_code.text(e, &at("postal_code"), field::POSTAL_CODE),
            country: self.country.text(e, &at("country"), field::COUNTRY),
        }
    }

    /// The address after `patch`, merged into `current` field by field.
    fn merge(patch: Patch<AddressPatch>, current: Option<Address>, e: &mut Errors, field: &str) -> Option<Address> {
        let p = match patch {
            Patch::Absent => return current,
            Patch::Null => return None,
            Patch::Value(p) => p,
        };
        let c = current.map(|a| (a.line1, a.line2, a.city, a.region, a.postal_code, a.country));
        let (line1, line2, city, region, postal_code, country) = match c {
            Some((l1, l2, ci, r, pc, co)) => (Some(l1), l2, Some(ci), r, pc, Some(co)),
            None => Default::default(),
        };
        let line1 = p.line1.apply(line1);
        let city = p.city.apply(city);
        let country = p.country.apply(country);
        required(e, &format!("{field}.line1"), line1.is_some());
        required(e, &format!("{field}.city"), city.is_some());
        required(e, &format!("{field}.country"), country.is_some());
        Some(Address {
            line1: line1?,
            line2: p.line2.apply(line2),
            city: city?,
            region: p.region.apply(region),
            postal_code: p.postal_code.apply(postal_code),
            country: country?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn current() -> Profile {
        Profile {
            email: Some("a@example.com".into()),
            first_name: Some("Ann".into()),
            address: Some(Address {
                line1: "1 Main St".into(),
                line2: None,
                city: "Dubai".into(),
                region: None,
                postal_code: None,
                country: "AE".into(),
            }),
            ..Profile::default()
        }
    }

    fn patch(v: Value) -> Result<ProfilePatch, Vec<FieldError>> {
        serde_json::from_value::<ProfilePatch>(v).expect("a patch").checked()
    }

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn absent_keeps_null_clears_objects_merge() {
        let p = patch(json!({"first_name": null, "address": {"city": " Abu Dhabi "}, "nationality": "ae"}))
            .expect("valid")
            .apply(&current())
            .expect("applies");
        assert_eq!(p.first_name, None);
        assert_eq!(p.email.as_deref(), Some("a@example.com"));
        assert_eq!(p.nationality.as_deref(), Some("AE"), "normalised at the edge");
        let a = p.address.expect("address");
        assert_eq!((a.line1.as_str(), a.city.as_str()), ("1 Main St", "Abu Dhabi"));
    }

    #[test]
    fn every_field_is_checked_by_its_rule() {
        let errors = patch(json!({
            "mobile": "12", "email": "nope", "locale": "??", "address": {"city": " ", "country": "ZZ"},
            "external_ref": {"id": ""}
        }))
        .expect_err("invalid");
        let fields = fields(&errors);
        for f in [
            "mobile",
            "email",
            "locale",
            "address.city",
            "address.country",
            "external_ref.id",
        ] {
            assert!(fields.contains(&f), "missing {f} in {fields:?}");
        }
    }

    #[test]
    fn what_spans_fields_is_checked_on_apply() {
        let errors = patch(json!({"email": null}))
            .expect("each field valid")
            .apply(&current())
            .expect_err("no identifier left");
        assert_eq!(fields(&errors), ["email"]);
        let errors = patch(json!({"billing_address": {"city": "Doha"}}))
            .expect("each field valid")
            .apply(&current())
            .expect_err("incomplete");
        assert_eq!(fields(&errors), ["billing_address.line1", "billing_address.country"]);
        let p = patch(json!({"communication_preferences": {"sms": true}, "email_verified": true}))
            .expect("valid")
            .apply(&current())
            .expect("applies");
        assert!(p.communication_preferences.sms && !p.communication_preferences.email && p.email_verified);
    }
}
