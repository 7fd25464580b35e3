//! The household use cases (see [`crate::users`]): create one, add an
//! account of a user, remove an account.

use crate::append::Meta;
use crate::household::{HouseholdAction, HouseholdCommand};
use crate::runner::{CommandError, Commands, Committed, Load};
use roster_events::household::{HouseholdDoc, HouseholdEvent};
use uuid::Uuid;

/// A household's document as a command left it, its version and events.
pub type Outcome = Committed<HouseholdDoc, HouseholdEvent>;

/// Creates a household under a new id.
pub async fn create(commands: &Commands, meta: Meta, name: Option<String>) -> Result<Outcome, CommandError> {
    let id = Uuid::now_v7();
    let action = HouseholdAction::Create { household_id: id, name };
    run(commands, meta, id, action, Load::Fresh).await
}

/// Runs a command on an existing household (a member added or removed).
pub async fn act(commands: &Commands, meta: Meta, id: Uuid, action: HouseholdAction) -> Result<Outcome, CommandError> {
    run(commands, meta, id, action, Load::Existing).await
}

async fn run(
    commands: &Commands,
    meta: Meta,
    id: Uuid,
    action: HouseholdAction,
    load: Load,
) -> Result<Outcome, CommandError> {
    let command = HouseholdCommand {
        company_id: meta.company_id.clone(),
        at: meta.at,
        action,
    };
    commands.household(id, command, meta, load).await
}
