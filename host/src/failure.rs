//! How a command fails: a message for the user and the process exit status.

use std::fmt::Display;

/// A command's failure. Exit 1 means "checked and refused" (a verification or
/// integrity failure); exit 2 means the input itself was unusable; exit 3
/// means a grant would break the owner's lifetime privacy budget.
pub(crate) struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    /// The input cannot be used (bad argument, unreadable or malformed file): exit 2.
    pub(crate) fn input(message: impl Display) -> Self {
        Failure { code: 2, message: message.to_string() }
    }

    /// The input was understood and checked, and the check failed: exit 1.
    pub(crate) fn rejected(message: impl Display) -> Self {
        Failure { code: 1, message: message.to_string() }
    }

    /// A grant the owner's budget ledger refuses: exit 3.
    pub(crate) fn over_budget(message: impl Display) -> Self {
        Failure { code: 3, message: message.to_string() }
    }

    pub(crate) fn code(&self) -> u8 {
        self.code
    }

    pub(crate) fn message(&self) -> &str {
        &self.message
    }
}

/// The result of running one subcommand.
pub(crate) type Outcome = Result<(), Failure>;
