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
    // A webhook endpoint's secret, and the one it rotated away from.
    let endpoint = Uuid::now_v7();
    let (secret, previous) = ([7u8; 32], [9u8; 32]);
    let (wrapped, master_id) = before.wrap_secret(endpoint.as_bytes(), &secret);
    let (wrapped_previous, _) = before.wrap_secret(endpoint.as_bytes(), &previous);
    sqlx::query(
        "INSERT INTO webhook_endpoints (id, company_id, url, secret, previous_secret, master_id, after_position)
         VALUES ($1, 'acme', 'https://example.com/hook', $2, $3, $4, 0)",
    )
    .bind(endpoint)
    .bind(wrapped)
    .bind(wrapped_previous)
    .bind(master_id)
    .execute(&pool)
    .await
    .expect("endpoint stored");

    // The new master key alone does not know the stored keys.
    assert!(Vault::new(new.clone(), None).check(&pool).await.is_err());

    let during = Vault::new(new.clone(), Some(old.clone()));
    during.check(&pool).await.expect("both masters known");
    assert_eq!(during.under_previous(&pool).await.expect("count"), 1202);
    let mut rewrapped = 0;
    loop {
        let n = during.rewrap_batch(&pool, 500).await.expect("rewrapped");
        if n == 0 {
            break;
        }
        rewrapped += n;
    }
    assert_eq!(rewrapped, 1202);
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
    let (wrapped, wrapped_previous, master_id): (Vec<u8>, Vec<u8>, String) =
        sqlx::query_as("SELECT secret, previous_secret, master_id FROM webhook_endpoints WHERE id = $1")
            .bind(endpoint)
            .fetch_one(&pool)
            .await
            .expect("endpoint");
    let opened = after
        .unwrap_secret(endpoint.as_bytes(), &wrapped, &master_id)
        .expect("secret opens");
    assert_eq!(*opened, secret);
    let opened = after
        .unwrap_secret(endpoint.as_bytes(), &wrapped_previous, &master_id)
        .expect("previous secret opens");
    assert_eq!(*opened, previous);
    assert!(
        Vault::new(old, None).check(&pool).await.is_err(),
        "the old master is no longer needed nor known"
    );
}
