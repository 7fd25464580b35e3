//! Rotating the master key rewraps every stored key; the data they seal
//! reads the same, under the new master key alone.

use roster_vault::{MasterKey, Vault};
use sqlx::PgPool;
use uuid::Uuid;

#[sqlx::test(migrations = "../migrations")]
async fn rotation_rewraps_every_key_and_the_data_still_opens(pool: PgPool) {
    let (old, new) = (MasterKey::generate().0, MasterKey::generate().0);
    let before = Vault::new(old.clone(), None);
    let mut sealed = Vec::new();
    for i in 0..1200u128 {
        let owner = Uuid::from_u128(i + 1);
        let (key, stored) = before.new_key(owner, "acme");
        sqlx::query("INSERT INTO data_keys (owner_id, company_id, wrapped, master_id) VALUES ($1, $2, $3, $4)")
            .bind(stored.owner)
            .bind(&stored.company_id)
            .bind(&stored.wrapped)
            .bind(&stored.master_id)
            .execute(&pool)
            .await
            .expect("key stored");
        sealed.push((owner, key.seal(format!("value {i}").as_bytes())));
    }
    let claim = before.claim_key(&pool, "acme").await.expect("claim key").hash("a@b.c");

    // The new master key alone does not know the stored keys.
    assert!(Vault::new(new.clone(), None).check(&pool).await.is_err());

    let during = Vault::new(new.clone(), Some(old.clone()));
    during.check(&pool).await.expect("both masters known");
    assert_eq!(during.under_previous(&pool).await.expect("count"), 1201);
    let mut rewrapped = 0;
    loop {
        let n = during.rewrap_batch(&pool, 500).await.expect("rewrapped");
        if n == 0 {
            break;
        }
        rewrapped += n;
    }
    assert_eq!(rewrapped, 1201);
    assert_eq!(during.under_previous(&pool).await.expect("count"), 0);

    let after = Vault::new(new, None);
    after.check(&pool).await.expect("every key under the new master");
    let owners: Vec<Uuid> = sealed.iter().map(|(o, _)| *o).collect();
    let ring = after.keyring(&pool, &owners).await.expect("keys");
    for (i, (owner, value)) in sealed.iter().enumerate() {
        let key = ring.get(*owner).expect("a key");
        assert_eq!(key.open(value).expect("opens"), format!("value {i}").into_bytes());
    }
    assert_eq!(
        after.claim_key(&pool, "acme").await.expect("claim key").hash("a@b.c"),
        claim
    );
    assert!(
        Vault::new(old, None).check(&pool).await.is_err(),
        "the old master is no longer needed nor known"
    );
}
