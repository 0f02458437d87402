//! API keys are never stored or compared in clear: only their SHA-256 hashes.

use crate::identity::Tier;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Hex SHA-256 of a presented key.
pub fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The short, loggable id of a key (first 12 hex digits of its hash).
pub fn key_id(key_hash: &str) -> &str {
    key_hash.get(..12).unwrap_or(key_hash)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub hash: String,
    pub subject: String,
    pub tier: Tier,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("api key record {index} is not `sha256hex:subject:tier`")]
pub struct KeyRecordError {
    pub index: usize,
}

/// Parses `hash:subject:tier` records separated by commas or whitespace.
pub fn parse_records(spec: &str) -> Result<Vec<KeyRecord>, KeyRecordError> {
    spec.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .enumerate()
        .map(|(index, record)| {
            let mut parts = record.splitn(3, ':');
            let (Some(hash), Some(subject), Some(tier)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(KeyRecordError { index });
            };
            let valid_hash = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
            match Tier::parse(tier) {
                Some(tier) if valid_hash && !subject.is_empty() => Ok(KeyRecord {
                    hash: hash.to_ascii_lowercase(),
                    subject: subject.to_string(),
                    tier,
                }),
                _ => Err(KeyRecordError { index }),
            }
        })
        .collect()
}

/// Finds the record for a presented key, comparing every hash in constant time.
pub fn find<'a>(records: &'a [KeyRecord], presented: &str) -> Option<&'a KeyRecord> {
    let presented = hash(presented);
    let mut found = None;
    for record in records {
        if bool::from(record.hash.as_bytes().ct_eq(presented.as_bytes())) {
            found = Some(record);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_only_the_right_key() {
        let spec = format!("{}:alice:premium, {}:bob:free", hash("sk-a"), hash("sk-b"));
        let records = parse_records(&spec).unwrap();
        assert_eq!(
            find(&records, "sk-a").map(|r| r.subject.as_str()),
            Some("alice")
        );
        assert_eq!(find(&records, "sk-b").map(|r| r.tier), Some(Tier::Free));
        assert_eq!(find(&records, "sk-c"), None);
    }

    #[test]
    fn rejects_malformed_records() {
        assert_eq!(
            parse_records("abc:alice:free"),
            Err(KeyRecordError { index: 0 })
        );
        let good = format!("{}:a:free", hash("x"));
        assert_eq!(
            parse_records(&format!("{good},{}:b:root", hash("y"))),
            Err(KeyRecordError { index: 1 })
        );
        assert_eq!(parse_records("").unwrap(), vec![]);
    }
}
