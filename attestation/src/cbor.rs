//! The one place CBOR is encoded and decoded.
//!
//! serde_cbor is unmaintained (RUSTSEC-2021-0127); keeping every use behind
//! these two functions keeps a swap to another encoder cheap. Only structs
//! (never hash maps) are encoded, so field order and therefore the bytes are
//! deterministic. Decoding is strict: the input must be exactly the canonical
//! encoding of the value it decodes to, so that every document has one byte
//! representation and one hash.

use serde::{de::DeserializeOwned, Serialize};

/// Why bytes could not be decoded as the expected CBOR document.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CborError {
    /// The bytes are not well-formed CBOR of the expected shape.
    #[error("malformed CBOR: {0}")]
    Malformed(String),
    /// The bytes decode, but are not the canonical encoding of the value.
    #[error("CBOR is not in canonical form (re-encoding differs)")]
    NonCanonical,
}

/// Encodes `value` deterministically.
pub fn to_vec<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising a struct of plain fields into a Vec cannot fail.
    serde_cbor::to_vec(value).expect("CBOR encoding of a plain struct")
}

/// Decodes `bytes`, rejecting trailing data and non-canonical encodings.
pub fn from_slice<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Result<T, CborError> {
    let value: T = serde_cbor::from_slice(bytes).map_err(|e| CborError::Malformed(e.to_string()))?;
    if to_vec(&value) != bytes {
        return Err(CborError::NonCanonical);
    }
    Ok(value)
}

/// Reads only the `version` field of a versioned document, so that a document
/// of an unknown version is reported as such rather than as malformed.
pub fn version_of(bytes: &[u8]) -> Result<u32, CborError> {
    #[derive(serde::Deserialize)]
    struct Probe {
        version: u32,
    }
    serde_cbor::from_slice::<Probe>(bytes).map(|p| p.version).map_err(|e| CborError::Malformed(e.to_string()))
}

/// Reads only the name of an externally tagged enum value (a bare text
/// string, or a one-entry map from the name to the fields), so that a message
/// of an unknown kind is reported as such rather than as malformed.
pub fn variant_of(bytes: &[u8]) -> Result<String, CborError> {
    use serde_cbor::Value;
    let value: Value = serde_cbor::from_slice(bytes).map_err(|e| CborError::Malformed(e.to_string()))?;
    match value {
        Value::Text(name) => Ok(name),
        Value::Map(map) if map.len() == 1 => match map.into_iter().next() {
            Some((Value::Text(name), _)) => Ok(name),
            _ => Err(CborError::Malformed("the message name is not a text string".into())),
        },
        _ => Err(CborError::Malformed("not a tagged message (a text string or a one-entry map)".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Doc {
        version: u32,
        #[serde(with = "serde_bytes")]
        id: Vec<u8>,
    }

    #[test]
    fn golden_bytes() {
        let doc = Doc { version: 1, id: vec![0xaa, 0xbb] };
        // map(2) "version" 1 "id" bytes(2) aabb
        let golden = hex::decode("a26776657273696f6e0162696442aabb").unwrap();
        assert_eq!(to_vec(&doc), golden);
        assert_eq!(from_slice::<Doc>(&golden).unwrap(), doc);
    }

    #[test]
    fn variant_names() {
        // "status", {"hello": {"version": 1}}
        assert_eq!(variant_of(&hex::decode("66737461747573").unwrap()).unwrap(), "status");
        assert_eq!(variant_of(&hex::decode("a16568656c6c6fa16776657273696f6e01").unwrap()).unwrap(), "hello");
        // 1, [], {1: 2}, {"a": 1, "b": 2}
        for bad in ["01", "80", "a10102", "a2616101616202"] {
            assert!(matches!(variant_of(&hex::decode(bad).unwrap()), Err(CborError::Malformed(_))), "{bad}");
        }
    }

    #[test]
    fn rejects_trailing_and_non_canonical() {
        let mut bytes = to_vec(&Doc { version: 1, id: vec![] });
        bytes.push(0);
        assert!(matches!(from_slice::<Doc>(&bytes), Err(CborError::Malformed(_))));
        // version encoded as a one-byte uint (0x18 0x01) instead of the short form.
        let long = hex::decode("a26776657273696f6e18016269644100").unwrap();
        assert!(matches!(from_slice::<Doc>(&long), Err(CborError::NonCanonical)));
    }
}
