//! An append that must lock or read before it writes, in a transaction of
//! its own: every row it may wait for taken in one order all writers share,
//! the events last.

use crate::append::{Append, AppendError, Appended};
use crate::constraints::{Claim, Constraint, Violation};
use roster_vault::ClaimKey;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::erase::{erase, Cascade};

/// An append that must lock or read before it writes, in its own
/// transaction. Every row and lock it may wait for comes first, in one
/// order all writers share (see [`Step`]), and the events last: two appends
/// cannot deadlock on claims, and a transaction waits before its first
/// write rather than after it.
pub(super) async fn append_in_transaction(pool: &PgPool, append: &Append) -> Result<Appended, AppendError> {
    let mut tx = pool.begin().await?;
    sqlx::query(crate::writer::WAIT_LIMITS).execute(&mut *tx).await?;
    let mut cascade = None;
    for step in steps(&mut tx, append).await? {
        apply(&mut tx, append, step, &mut cascade).await?;
    }
    // Events last, from here to the commit under the log's lock (their
    // positions' default takes it): an erasure's events on other streams,
    // then the append's events and idempotency outcome, in one group-commit
    // statement without the constraints the steps above applied.
    let cascaded = match &cascade {
        Some(c) => c.appends(&mut tx, append).await?,
        None => Vec::new(),
    };
    let all: Vec<&Append> = cascaded.iter().chain([append]).collect();
    let position = crate::writer::insert_stepped(&mut tx, &all).await?;
    tx.commit().await?;
    Ok(Appended {
        version: append.version(),
        position,
    })
}

/// The class (first key of the two-key advisory locks) of the per-company
/// parent locks. Classes keep lock families apart: a company's lock and a
/// subscriber's (`roster_projections::engine::SUBSCRIBER_LOCKS`) can never
/// be the same lock, whatever their names hash to; the one-key locks (the
/// log's, the erasure's) are a space of their own.
pub const PARENT_LOCKS: i32 = 1;

/// One step of a transactional append, in the order [`steps`] sorts them:
/// the company's parent lock, then unique-claim rows by `(kind, value)` (a
/// release before a claim of the same row), then the checks and registry
/// writes that wait for nothing.
#[derive(Debug)]
enum Step<'a> {
    ParentLock,
    Release {
        kind: &'static str,
        value: String,
    },
    Claim {
        kind: &'static str,
        value: String,
        taken: Violation,
    },
    Then(&'a Constraint),
}

impl Step<'_> {
    /// The claim row a step touches, for sorting.
    fn row(&self) -> Option<(&'static str, &str)> {
        match self {
            Step::Release { kind, value } | Step::Claim { kind, value, .. } => Some((kind, value)),
            _ => None,
        }
    }
}

/// The constraints as ordered steps. A release by kind is resolved to the
/// owner's current value (only the owner's own appends change it).
async fn steps<'a>(tx: &mut Transaction<'_, Postgres>, append: &'a Append) -> Result<Vec<Step<'a>>, AppendError> {
    let (company, owner, constraints) = (&append.company_id, append.stream.id, &append.constraints);
    let mut steps = Vec::with_capacity(constraints.len() + 1);
    let released: Vec<&'static str> = constraints
        .iter()
        .filter_map(|c| match c {
            Constraint::Release(kind) => Some(kind.as_str()),
            _ => None,
        })
        .collect();
    if !released.is_empty() {
        let held: Vec<(String, String)> = sqlx::query_as(
            "SELECT kind, value FROM unique_claims WHERE company_id = $1 AND owner_id = $2 AND kind = ANY($3)",
        )
        .bind(company)
        .bind(owner)
        .bind(&released)
        .fetch_all(&mut **tx)
        .await?;
        for (kind, value) in held {
            if let Some(kind) = released.iter().find(|k| **k == kind) {
                steps.push(Step::Release { kind, value });
            }
        }
    }
    for c in constraints {
        match c {
            Constraint::Release(_) => {}
            Constraint::ReleaseValue(claim) => {
                let (kind, value) = claim.key(&append.claim_key);
                steps.push(Step::Release { kind, value });
            }
            Constraint::Claim(claim) => {
                let (kind, value) = claim.key(&append.claim_key);
                steps.push(Step::Claim {
                    kind,
                    value,
                    taken: claim.taken(),
                });
            }
            // Erasing unlinks the user's children; a new child waits for it.
            c @ (Constraint::LinkParent(_) | Constraint::Register { parent: Some(_) } | Constraint::Erase { .. }) => {
                steps.push(Step::ParentLock);
                steps.push(Step::Then(c));
            }
            c => steps.push(Step::Then(c)),
        }
    }
    steps.sort_by(|a, b| {
        let rank = |s: &Step<'_>| match s {
            Step::ParentLock => 0,
            Step::Release { .. } | Step::Claim { .. } => 1,
            Step::Then(_) => 2,
        };
        rank(a)
            .cmp(&rank(b))
            .then_with(|| a.row().cmp(&b.row()))
            .then_with(|| matches!(a, Step::Claim { .. }).cmp(&matches!(b, Step::Claim { .. })))
    });
    // The same claim twice is one; releasing and re-claiming one row (an
    // email changed only in case) keeps it.
    let mut ordered: Vec<Step<'a>> = Vec::with_capacity(steps.len());
    for step in steps {
        match (ordered.last(), &step) {
            (Some(prev @ Step::Claim { .. }), Step::Claim { .. }) if prev.row() == step.row() => continue,
            (Some(prev @ Step::Release { .. }), Step::Claim { .. }) if prev.row() == step.row() => {
                ordered.pop();
            }
            _ => {}
        }
        ordered.push(step);
    }
    Ok(ordered)
}

async fn apply(
    tx: &mut Transaction<'_, Postgres>,
    append: &Append,
    step: Step<'_>,
    cascade: &mut Option<Cascade>,
) -> Result<(), AppendError> {
    let (company, owner) = (append.company_id.as_str(), append.stream.id);
    match step {
        Step::ParentLock => {
            // Serialises every parent link of the company.
            sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext('roster.parents.' || $2))")
                .bind(PARENT_LOCKS)
                .bind(company)
                .execute(&mut **tx)
                .await?;
        }
        Step::Claim { kind, value, taken } => {
            // A claim already held by the same owner is kept; one held by
            // another owner is a violation. A racing insert of the same
            // value waits here until the other transaction ends.
            let row = sqlx::query_scalar::<_, Uuid>(
                "INSERT INTO unique_claims (company_id, kind, value, owner_id) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (company_id, kind, value) DO UPDATE SET owner_id = unique_claims.owner_id
                 RETURNING owner_id",
            )
            .bind(company)
            .bind(kind)
            .bind(&value)
            .bind(owner)
            .fetch_one(&mut **tx)
            .await?;
            if row != owner {
                return Err(taken.into());
            }
        }
        Step::Release { kind, value } => {
            sqlx::query(
                "DELETE FROM unique_claims WHERE company_id = $1 AND kind = $2 AND value = $3 AND owner_id = $4",
            )
            .bind(company)
            .bind(kind)
            .bind(&value)
            .bind(owner)
            .execute(&mut **tx)
            .await?;
        }
        Step::Then(Constraint::AccountOwnedBy { account_id, user_id }) => {
            // Locked, so that erasing the owner (which deletes the claim)
            // waits for this append or this append for the erasure.
            let (kind, value) = Claim::Account(account_id.clone()).key(&append.claim_key);
            let owned: Option<i32> = sqlx::query_scalar(
                "SELECT 1 FROM unique_claims
                  WHERE company_id = $1 AND kind = $2 AND value = $3 AND owner_id = $4
                    FOR SHARE",
            )
            .bind(company)
            .bind(kind)
            .bind(value)
            .bind(user_id)
            .fetch_optional(&mut **tx)
            .await?;
            if owned.is_none() {
                return Err(Violation::AccountNotOwned.into());
            }
        }
        Step::Then(Constraint::LinkParent(parent)) => {
            // Under the company's parent lock (taken first): the parent
            // exists here, and walking up from it never reaches the user.
            if !user_in_company(tx, company, *parent).await? {
                return Err(Violation::ParentNotFound.into());
            }
            let cycle: bool = sqlx::query_scalar(
                "WITH RECURSIVE up(id) AS (
                     SELECT $1::uuid
                     UNION
                     SELECT r.parent_id FROM user_registry r JOIN up ON r.user_id = up.id
                      WHERE r.parent_id IS NOT NULL)
                 SELECT EXISTS (SELECT 1 FROM up WHERE id = $2)",
            )
            .bind(parent)
            .bind(owner)
            .fetch_one(&mut **tx)
            .await?;
            if cycle {
                return Err(Violation::RelationshipCycle.into());
            }
            set_parent(tx, owner, Some(*parent)).await?;
        }
        Step::Then(Constraint::UnlinkParent) => set_parent(tx, owner, None).await?,
        Step::Then(Constraint::Register { parent }) => {
            if let Some(parent) = parent {
                if !user_in_company(tx, company, *parent).await? {
                    return Err(Violation::ParentNotFound.into());
                }
            }
            sqlx::query("INSERT INTO user_registry (user_id, company_id, parent_id) VALUES ($1, $2, $3)")
                .bind(owner)
                .bind(company)
                .bind(parent)
                .execute(&mut **tx)
                .await?;
        }
        Step::Then(Constraint::Erase { at }) => *cascade = Some(erase(tx, append, *at).await?),
        Step::Then(c @ (Constraint::Claim(_) | Constraint::Release(_) | Constraint::ReleaseValue(_))) => {
            unreachable!("claims and releases become their own steps: {c:?}")
        }
    }
    Ok(())
}

/// Whether the user exists, not erased, in the company (for parent links).
async fn user_in_company(tx: &mut Transaction<'_, Postgres>, company: &str, user: Uuid) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM user_registry WHERE company_id = $1 AND user_id = $2 AND erased_at IS NULL)",
    )
    .bind(company)
    .bind(user)
    .fetch_one(&mut **tx)
    .await
}

async fn set_parent(tx: &mut Transaction<'_, Postgres>, user: Uuid, parent: Option<Uuid>) -> sqlx::Result<()> {
    sqlx::query("UPDATE user_registry SET parent_id = $2 WHERE user_id = $1")
        .bind(user)
        .bind(parent)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl Claim {
    /// The claim's row: its kind and the keyed hash of its value.
    pub(crate) fn key(&self, claim_key: &ClaimKey) -> (&'static str, String) {
        let kind = self.kind().as_str();
        (kind, claim_key.hash(&self.value()))
    }
}
