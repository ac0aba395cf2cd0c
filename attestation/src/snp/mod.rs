//! AMD SEV-SNP: the report layout, the TCB encoding and the AMD key chain.
//! The simulated platform produces exactly these structures, so its evidence
//! runs through this same code.

pub mod chain;
pub mod report;
pub mod tcb;
