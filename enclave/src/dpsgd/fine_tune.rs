//! One DP-SGD fine-tuning run on decrypted texts: tokenise, group into privacy units,
//! train LoRA adapters on the frozen base model. The service (sealed corpora, terms
//! from the signed manifest) and the development entry point ([`super::dev`]) share it.

use super::engine::{DpSgd, Progress};
use super::plan::Plan;
use super::sampling::{Dataset, PrivacyUnit};
use super::summary::TrainingSummary;
use super::{DpError, Result};
use crate::model::decoder::Llama;
use crate::model::load::Checkpoint;
use crate::model::lora::{LoraConfig, LoraParams};
use crate::model::tokenizer::encode;
use candle_core::DType;
use rand_chacha::rand_core::{OsRng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use zeroize::Zeroize;

/// Decrypted training texts. The texts are wiped once tokenised.
pub struct Texts {
    /// One text per record.
    pub texts: Vec<String>,
    /// Per record, the user it belongs to; needed for user-level privacy.
    pub users: Option<Vec<String>>,
}

impl Drop for Texts {
    fn drop(&mut self) {
        self.texts.iter_mut().for_each(Zeroize::zeroize);
        self.users.iter_mut().flatten().for_each(Zeroize::zeroize);
    }
}

/// The trained adapter and the public summary of the run.
pub struct Trained {
    /// The noised LoRA adapter.
    pub params: LoraParams,
    /// Public facts of the run: parameters, steps and ε.
    pub summary: TrainingSummary,
}

/// Trains a fresh LoRA adapter of `lora` on `data` under `plan` (σ already calibrated
/// from public parameters). Refuses data with more privacy units than the plan
/// declared, since `q` and the guarantee assume at most that many.
pub fn fine_tune(ckpt: &Checkpoint, data: Texts, plan: &Plan, lora: LoraConfig, progress: &mut dyn FnMut(Progress)) -> Result<Trained> {
    let tokenizer = ckpt.tokenizer.as_ref().ok_or_else(|| DpError::bad("model", "the model carries no tokenizer"))?;
    let records = data.texts.iter().map(|t| encode(tokenizer, t)).collect::<crate::model::Result<Vec<_>>>()?;
    let dataset = match (plan.spec.privacy_unit, &data.users) {
        (PrivacyUnit::Record, _) => Dataset::records(records),
        (PrivacyUnit::User { max_records }, Some(users)) => Dataset::by_user(records, users, max_records)?,
        (PrivacyUnit::User { .. }, None) => {
            return Err(DpError::bad("privacy_unit", "user-level privacy needs a `user_id` on every record"))
        }
    };
    drop(data);
    let declared = plan.spec.declared_units;
    if dataset.units() as u64 > declared {
        return Err(DpError::bad(
            "declared_units",
            format!("the data has more privacy units than the {declared} the job declared"),
        ));
    }
    let model = Llama::load(&ckpt.weights, &ckpt.config)?;
    let mut rng = ChaCha20Rng::from_rng(OsRng).map_err(|e| DpError::Entropy(e.to_string()))?;
    let params = LoraParams::init(&ckpt.config, lora.clone(), &mut rng, DType::F32, model.device())?;
    let mut trainer = DpSgd::new(&model, params, plan.config)?;
    let outcome = trainer.train(&dataset, plan.spec.epsilon, &mut plan.ledger(), progress)?;
    let summary = TrainingSummary::new(plan, &outcome, &lora)?;
    Ok(Trained { params: trainer.into_params(), summary })
}
