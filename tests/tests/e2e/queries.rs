//! Query side: search, relationships, audit trail.

use reqwest::{Method, StatusCode};
use roster_tests::{spawn_app, Creds, Res, TestApp};
use serde_json::{json, Value};
use std::collections::HashSet;

async fn enroll(app: &TestApp, c: &Creds, body: Value) -> (String, String) {
    let r = app.post(c, "/v1/users", &body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    (
        r.body["id"].as_str().expect("id").to_string(),
        r.header("roster-consistency-token").expect("token").to_string(),
    )
}

/// `[{id, depth}, …]` of a relationships answer.
fn ids_and_depths(list: &Value) -> Vec<(String, i64)> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|x| {
            (
                x["id"].as_str().expect("id").to_string(),
                x["depth"].as_i64().expect("depth"),
            )
        })
        .collect()
}

async fn search(app: &TestApp, c: &Creds, path: &str, body: Value, token: &str) -> Res {
    TestApp::send(
        app.request(Some(c), Method::POST, path)
            .header("roster-consistency-token", token)
            .json(&body),
    )
    .await
}

fn ids(r: &Res) -> Vec<String> {
    r.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|u| u["id"].as_str().expect("id").to_string())
        .collect()
}

#[tokio::test]
async fn search_filters_and_ands() {
    let app = spawn_app().await;
    let c = app.creds("acme", None).await;
    let other = app.creds("globex", None).await;
    let (john, _) = enroll(&app, &c, json!({"email": "John.Doe@Example.com", "first_name": "John", "last_name": "Doe", "mobile": "+971 50 123 4567", "status": "active"})).await;
    let (jane, _) = enroll(
        &app,
        &c,
        json!({"email": "jane@example.com", "first_name": "Jane", "last_name": "Doerr", "parent_user_id": john}),
    )
    .await;
    let (bob, _) = enroll(
        &app,
        &c,
        json!({"email": "bob@example.com", "first_name": "Bob", "last_name": "Smith_%", "status": "active"}),
    )
    .await;
    enroll(&app, &other, json!({"email": "john@globex.com", "first_name": "John"})).await;
    let (_, t) = enroll(&app, &c, json!({"email": "zed@example.com"})).await;

    for (body, want) in [
        (json!({"name": "doe"}), vec![&john, &jane]),
        (json!({"name": "JOHN"}), vec![&john]),
        (json!({"name": "n d"}), vec![&john]),
        (json!({"name": "ane Doe"}), vec![&jane]),
        (json!({"name": "_%"}), vec![&bob]),
        (json!({"name": "%"}), vec![&bob]),
        (json!({"email": "JOHN.doe@example.COM"}), vec![&john]),
        (json!({"mobile": "+971-50-123-4567"}), vec![&john]),
        (json!({"status": "active"}), vec![&john, &bob]),
        (json!({"parent_user_id": john}), vec![&jane]),
        (json!({"name": "doe", "status": "active"}), vec![&john]),
        (json!({"name": "doe", "email": "bob@example.com"}), vec![]),
    ] {
        for path in ["/v1/users:search", "/v1/users/search"] {
            let r = search(&app, &c, path, body.clone(), &t).await;
            assert_eq!(r.status, StatusCode::OK, "{body}: {}", r.body);
            let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
            assert_eq!(ids(&r), want, "{path} {body}");
        }
    }
    for (body, field) in [
        (json!({"limit": 0}), "limit"),
        (json!({"limit": "abc"}), "limit"),
        (json!({"limit": true}), "limit"),
        (json!({"mobile": "12"}), "mobile"),
        (json!({"status": "gone"}), "status"),
        (json!({"color": "red"}), "color"),
        (json!({"after": "garbage"}), "after"),
    ] {
        let r = search(&app, &c, "/v1/users:search", body.clone(), &t).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, "VALIDATION_FAILED"),
            "{body}"
        );
        assert_eq!(r.body["errors"][0]["field"], field, "{body}");
    }
    let r = search(&app, &c, "/v1/users:search", json!({"limit": "2"}), &t).await;
    assert_eq!((ids(&r).len(), r.body["has_more"].as_bool()), (2, Some(true)));
    app.cleanup().await;
}

/// Pages never repeat or skip a row, even while users are being added.
#[tokio::test]
async fn search_pages_are_stable_under_writes() {
    let app = spawn_app().await;
    let c = app.creds("acme", None).await;
    let mut before = Vec::new();
    let mut token = String::new();
    for i in 0..30 {
        let (id, t) = enroll(
            &app,
            &c,
            json!({"email": format!("m{i}@example.com"), "first_name": "Mia", "last_name": format!("N{i}")}),
        )
        .await;
        before.push(id);
        token = t;
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut added = 0;
    loop {
        let mut body = json!({"name": "mia", "limit": 7});
        if let Some(a) = &after {
            body["after"] = json!(a);
        }
        let r = search(&app, &c, "/v1/users:search", body, &token).await;
        seen.extend(ids(&r));
        // Writes between pages.
        for _ in 0..3 {
            let (_, t) = enroll(
                &app,
                &c,
                json!({"email": format!("new{added}@example.com"), "first_name": "Mia"}),
            )
            .await;
            token = t;
            added += 1;
        }
        match r.body["next_cursor"].as_str() {
            Some(cursor) => after = Some(cursor.to_string()),
            None => break,
        }
        assert!(added < 300, "pages keep up with writes");
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no row twice");
    assert_eq!(&seen[..before.len()], &before[..], "every earlier row once, in order");
    app.cleanup().await;
}

#[tokio::test]
async fn relationships_at_any_depth() {
    let app = spawn_app().await;
    let c = app.creds("acme", None).await;
    let other = app.creds("globex", None).await;
    let (root, _) = enroll(&app, &c, json!({"email": "root@example.com", "first_name": "Root"})).await;
    let (a, _) = enroll(
        &app,
        &c,
        json!({"email": "a@example.com", "first_name": "A", "parent_user_id": root}),
    )
    .await;
    let (b, _) = enroll(
        &app,
        &c,
        json!({"email": "b@example.com", "first_name": "B", "parent_user_id": a}),
    )
    .await;
    let (cc, _) = enroll(
        &app,
        &c,
        json!({"email": "c@example.com", "first_name": "C", "parent_user_id": b}),
    )
    .await;
    let (d, token) = enroll(
        &app,
        &c,
        json!({"email": "d@example.com", "first_name": "D", "parent_user_id": root, "status": "active"}),
    )
    .await;

    let r = app.get_after(&c, &format!("/v1/users/{b}/relationships"), &token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["user_id"], b.as_str());
    assert_eq!(
        r.body["parent"],
        json!({"id": a, "first_name": "A", "last_name": null, "status": "inactive"})
    );
    assert_eq!(
        r.body["ancestors"],
        json!([{"id": a, "first_name": "A", "last_name": null, "depth": 1}, {"id": root, "first_name": "Root", "last_name": null, "depth": 2}])
    );
    assert_eq!(
        r.body["children"],
        json!([{"id": cc, "first_name": "C", "last_name": null, "status": "inactive"}])
    );
    assert_eq!(
        r.body["descendants"],
        json!([{"id": cc, "first_name": "C", "last_name": null, "parent_user_id": b, "depth": 1}])
    );

    let r = app
        .get_after(&c, &format!("/v1/users/{root}:getLinkedRelationships"), &token)
        .await;
    assert_eq!(r.body["parent"], Value::Null);
    assert_eq!(r.body["ancestors"], json!([]));
    let children: Vec<&str> = r.body["children"]
        .as_array()
        .expect("children")
        .iter()
        .map(|x| x["id"].as_str().expect("id"))
        .collect();
    assert_eq!(children, vec![a.as_str(), d.as_str()]);
    let descendants = ids_and_depths(&r.body["descendants"]);
    assert_eq!(
        descendants,
        vec![(a.clone(), 1), (d.clone(), 1), (b.clone(), 2), (cc.clone(), 3)]
    );

    let r = app
        .get_after(&c, &format!("/v1/users/{root}/relationships?depth=1"), &token)
        .await;
    assert_eq!(r.body["descendants"].as_array().map(Vec::len), Some(2));
    let r = app
        .get_after(&c, &format!("/v1/users/{cc}/relationships?depth=2"), &token)
        .await;
    assert_eq!(r.body["ancestors"].as_array().map(Vec::len), Some(2));
    for bad in ["0", "-1", "x"] {
        let r = app
            .get(&c, &format!("/v1/users/{root}/relationships?depth={bad}"))
            .await;
        assert_eq!(r.code(), "VALIDATION_FAILED", "{bad}");
    }
    let r = app.get(&other, &format!("/v1/users/{root}/relationships")).await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "USER_NOT_FOUND"));
    app.cleanup().await;
}

#[tokio::test]
async fn a_25_level_chain_is_listed_whole() {
    let app = spawn_app().await;
    let c = app.creds("acme", None).await;
    let mut chain: Vec<String> = Vec::new();
    let mut token = String::new();
    for i in 0..25 {
        let mut body = json!({"email": format!("level{i}@example.com"), "first_name": format!("L{i}")});
        if let Some(parent) = chain.last() {
            body["parent_user_id"] = json!(parent);
        }
        let (id, t) = enroll(&app, &c, body).await;
        chain.push(id);
        token = t;
    }
    let leaf = app
        .get_after(&c, &format!("/v1/users/{}/relationships", chain[24]), &token)
        .await;
    let ancestors = ids_and_depths(&leaf.body["ancestors"]);
    let expected: Vec<(String, i64)> = (1..25).map(|d| (chain[24 - d].clone(), d as i64)).collect();
    assert_eq!(ancestors, expected, "every ancestor, nearest first");
    let root = app
        .get_after(&c, &format!("/v1/users/{}/relationships", chain[0]), &token)
        .await;
    let descendants = ids_and_depths(&root.body["descendants"]);
    let expected: Vec<(String, i64)> = (1..25).map(|d| (chain[d].clone(), d as i64)).collect();
    assert_eq!(descendants, expected, "24 levels below the root");
    assert_eq!(root.body["descendants_truncated"], false);
    app.cleanup().await;
}

#[tokio::test]
async fn the_audit_trail_shows_every_event_with_its_actor() {
    let app = spawn_app().await;
    let c = app.creds("acme", None).await;
    let other = app.creds("globex", None).await;
    let r = TestApp::send(
        app.request(Some(&c), Method::POST, "/v1/users")
            .header("x-request-id", "req-enroll-1")
            .json(&json!({"email": "a@example.com", "password": "secret password 1"})),
    )
    .await;
    let id = r.body["id"].as_str().expect("id").to_string();
    app.call(
        &c,
        Method::PATCH,
        &format!("/v1/users/{id}"),
        Some(json!({"first_name": "Ann"})),
    )
    .await;
    app.call(
        &c,
        Method::POST,
        &format!("/v1/users/{id}/status"),
        Some(json!({"status": "active"})),
    )
    .await;

    let page = app.get(&c, &format!("/v1/users/{id}/events?limit=2")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let first = &page.body["data"][0];
    assert_eq!(first["sequence"], 1);
    assert_eq!(first["event_type"], "UserEnrolled");
    assert_eq!(first["event_version"], 1);
    assert_eq!(first["actor"], json!({"client_id": c.client_id}));
    assert_eq!(first["request_id"], "req-enroll-1");
    assert_eq!(first["data"]["email"], "a@example.com");
    assert_eq!(first["occurred_at"], r.body["created_at"]);
    assert!(first["event_id"].is_string());
    assert!(!page.body.to_string().contains("argon2") && !page.body.to_string().contains("_hash"));
    assert_eq!(page.body["data"][1]["data"]["changes"], json!({"first_name": "Ann"}));
    let cursor = page.body["next_cursor"].as_str().expect("more").to_string();
    let rest = app.get(&c, &format!("/v1/users/{id}/events?after={cursor}")).await;
    assert_eq!(rest.body["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(rest.body["data"][0]["event_type"], "StatusChanged");
    assert_eq!(rest.body["has_more"], false);
    let r = app.get(&other, &format!("/v1/users/{id}/events")).await;
    assert_eq!(r.code(), "USER_NOT_FOUND");
    app.cleanup().await;
}

/// The view is not trusted to be acyclic (it applies different users'
/// links a batch at a time): a cycle in it, reached from below or from
/// inside, ends every walk with each user listed once.
#[tokio::test]
async fn relationships_end_at_a_cycle_in_the_view() {
    let app = roster_tests::spawn_app_with(None).await;
    // Rows of the view alone (no events: the projector never touches them):
    // s -> a -> c -> b -> a (a cycle of three below s), and x -> x.
    let ids: Vec<uuid::Uuid> = (0..5).map(|_| uuid::Uuid::now_v7()).collect();
    let (s, a, b, c, x) = (ids[0], ids[1], ids[2], ids[3], ids[4]);
    for (id, parent) in [(s, Some(a)), (a, Some(c)), (c, Some(b)), (b, Some(a)), (x, Some(x))] {
        sqlx::query(
            "INSERT INTO user_view (id, company_id, version, status, parent_user_id, doc)
             VALUES ($1, 'acme', 1, 'active', $2, json_build_object('id', $1))",
        )
        .bind(id)
        .bind(parent)
        .execute(&app.pool)
        .await
        .expect("view row");
    }
    let rel = |id| roster_query::relationships::get(&app.pool, "acme", id, None);
    let up = rel(s).await.expect("query").expect("s");
    let ancestors: Vec<(uuid::Uuid, i32)> = up.ancestors.iter().map(|r| (r.id, r.depth)).collect();
    assert_eq!(ancestors, [(a, 1), (c, 2), (b, 3)]);
    assert!(up.descendants.is_empty());
    let inside = rel(a).await.expect("query").expect("a");
    let ancestors: Vec<(uuid::Uuid, i32)> = inside.ancestors.iter().map(|r| (r.id, r.depth)).collect();
    assert_eq!(ancestors, [(c, 1), (b, 2)]);
    let descendants: Vec<(uuid::Uuid, i32)> = inside.descendants.iter().map(|r| (r.id, r.depth)).collect();
    let mut expected = vec![(b, 1), (s, 1), (c, 2)];
    expected.sort();
    let mut got = descendants.clone();
    got.sort();
    assert_eq!(got, expected, "{descendants:?}");
    let alone = rel(x).await.expect("query").expect("x");
    assert!(alone.ancestors.is_empty() && alone.descendants.is_empty() && alone.parent.is_none());
    app.cleanup().await;
}
