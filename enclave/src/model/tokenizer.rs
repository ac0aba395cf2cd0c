//! Tokenizers from `tokenizer.json` or GGUF metadata, and the text records the tools read.

use super::{ModelError, Result};
use candle_core::quantized::gguf_file;
use candle_core::quantized::tokenizer::TokenizerFromGguf;
use sealtune_attestation::sealed::record::{Content, Record};
use std::path::Path;
use tokenizers::pre_tokenizers::{byte_level::ByteLevel, digits::Digits, sequence::Sequence};
use tokenizers::Tokenizer;

/// Reads a Hugging Face `tokenizer.json`.
pub fn from_json_file(path: &Path) -> Result<Tokenizer> {
    Tokenizer::from_file(path).map_err(|e| ModelError::Tokenizer(format!("{}: {e}", path.display())))
}

/// Builds the tokenizer a GGUF file describes, or `None` if it carries no tokenizer.
///
/// candle maps unknown pre-tokenizer types, SmolLM's `smollm` among them, to a ByteLevel
/// pre-tokenizer that adds a prefix space, so every text's first token comes out wrong
/// ("The" becomes "ĠThe"). For `smollm` this installs the pre-tokenizer of SmolLM's own
/// `tokenizer.json`: single digits, then ByteLevel without a prefix space.
pub fn from_gguf(ct: &gguf_file::Content) -> Result<Option<Tokenizer>> {
    if !ct.metadata.contains_key("tokenizer.ggml.model") {
        return Ok(None);
    }
    let mut tokenizer = Tokenizer::from_gguf(ct).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    if let Some(gguf_file::Value::String(pre)) = ct.metadata.get("tokenizer.ggml.pre") {
        if pre == "smollm" {
            tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
                Digits::new(true).into(),
                ByteLevel::new(false, true, true).into(),
            ])));
        }
    }
    Ok(Some(tokenizer))
}

/// Token ids of `text`, with the special tokens the tokenizer's post-processor adds (BOS).
pub fn encode(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    let encoding = tokenizer.encode(text, true).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    Ok(encoding.get_ids().to_vec())
}

/// The text of `ids`, keeping special tokens out.
pub fn decode(tokenizer: &Tokenizer, ids: &[u32]) -> Result<String> {
    tokenizer.decode(ids, true).map_err(|e| ModelError::Tokenizer(e.to_string()))
}

/// The text the model is trained or evaluated on for a corpus record. Chats
/// use the ChatML template of SmolLM2 and Qwen2
/// (`<|im_start|>role\ncontent<|im_end|>\n`); GGUF's Jinja chat templates are
/// not interpreted.
pub fn record_text(record: &Record) -> String {
    match &record.content {
        Content::Text(text) => text.clone(),
        Content::Messages(messages) => {
            messages.iter().map(|m| format!("<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content)).collect()
        }
    }
}
