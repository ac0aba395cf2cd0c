//! Corpus records: JSON Lines, one record per line, with either a `text`
//! string or a `messages` list of chat turns, and an optional `user_id`
//! (the privacy unit for user-level DP).

use super::SealedError;
use serde::Deserialize;
use std::io::BufRead;

/// One chat turn.
// No `Debug`: records are private data and must not reach logs or panics.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The turn's text.
    pub content: String,
}

/// What a record holds.
#[derive(Clone, PartialEq, Eq)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// A chat, in order.
    Messages(Vec<Message>),
}

/// One corpus record.
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    /// The text or chat.
    pub content: Content,
    /// The user the record belongs to, when the owner knows it.
    pub user_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    text: Option<String>,
    messages: Option<Vec<Message>>,
    user_id: Option<String>,
}

impl Record {
    /// Parses one line; the error says what is wrong without echoing the line.
    pub fn parse(line: &str) -> Result<Record, String> {
        let parsed: Line = serde_json::from_str(line).map_err(|e| {
            // serde_json's message can quote a value of the private record; keep only the category.
            format!("not a JSON record ({:?} error at column {})", e.classify(), e.column())
        })?;
        let content = match (parsed.text, parsed.messages) {
            (Some(text), None) => Content::Text(text),
            (None, Some(messages)) if messages.is_empty() => return Err("`messages` is empty".into()),
            (None, Some(messages)) => {
                if let Some(m) = messages.iter().find(|m| !matches!(m.role.as_str(), "system" | "user" | "assistant")) {
                    return Err(format!("unknown message role of length {}", m.role.len()));
                }
                Content::Messages(messages)
            }
            (Some(_), Some(_)) => return Err("has both `text` and `messages`".into()),
            (None, None) => return Err("has neither `text` nor `messages`".into()),
        };
        Ok(Record { content, user_id: parsed.user_id })
    }
}

/// Checks every line of a JSONL corpus (blank lines are not allowed either);
/// returns the number of records, or the first bad line.
pub fn validate_jsonl(reader: impl BufRead) -> Result<u64, SealedError> {
    let mut count = 0;
    for (index, line) in reader.lines().enumerate() {
        let line_no = index as u64 + 1;
        let line = line.map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => SealedError::BadRecord { line: line_no, reason: "not UTF-8".into() },
            _ => SealedError::Io(e),
        })?;
        Record::parse(&line).map_err(|reason| SealedError::BadRecord { line: line_no, reason })?;
        count += 1;
    }
    Ok(count)
}

/// Parses a whole decrypted corpus held in memory.
pub fn parse_jsonl(text: &str) -> Result<Vec<Record>, SealedError> {
    text.lines()
        .enumerate()
        .map(|(i, line)| Record::parse(line).map_err(|reason| SealedError::BadRecord { line: i as u64 + 1, reason }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_text_and_chat_records() {
        let r = Record::parse(r#"{"text":"hello","user_id":"u1"}"#).unwrap();
        assert!(r.content == Content::Text("hello".into()));
        assert!(r.user_id.as_deref() == Some("u1"));
        let r = Record::parse(r#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}]}"#).unwrap();
        assert!(matches!(r.content, Content::Messages(ref m) if m.len() == 2));
    }

    #[test]
    fn reports_the_first_bad_line_without_its_content() {
        let corpus = "{\"text\":\"a\"}\n{\"text\":\"b\"}\n{\"txt\":\"SECRET\"}\n{\"oops\n";
        match validate_jsonl(corpus.as_bytes()) {
            Err(SealedError::BadRecord { line, reason }) => {
                assert_eq!(line, 3);
                assert!(!reason.contains("SECRET"), "{reason}");
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
        assert!(matches!(validate_jsonl("\n".as_bytes()), Err(SealedError::BadRecord { line: 1, .. })));
        assert!(matches!(validate_jsonl(r#"{"text":"a","messages":[]}"#.as_bytes()), Err(SealedError::BadRecord { line: 1, .. })));
        assert_eq!(validate_jsonl("".as_bytes()).unwrap(), 0);
    }
}
