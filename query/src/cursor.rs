//! Opaque cursors: clients pass back what `next_cursor` gave them.

use crate::QueryError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use uuid::Uuid;

/// A cursor positioned after the row with this id.
pub fn encode_id(id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(id.as_bytes())
}

pub fn decode_id(cursor: &str) -> Result<Uuid, QueryError> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| QueryError::InvalidCursor)?;
    Uuid::from_slice(&bytes).map_err(|_| QueryError::InvalidCursor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let id = Uuid::now_v7();
        assert_eq!(decode_id(&encode_id(id)).ok(), Some(id));
        assert!(decode_id("not a cursor!").is_err());
        assert!(decode_id("AAAA").is_err());
    }
}
