#!/usr/bin/env python3
"""Seeds a demo company through the public API, so the console has something
to show: a family and a company with their employees (a relationship tree),
accounts in households, cards, and a history of changes on each user.

    python3 scripts/demo-seed.py http://127.0.0.1:8080 <client_id> <client_secret>

Only the standard library; every call is an ordinary API request.
"""
import json
import sys
import urllib.error
import urllib.request

base, client_id, secret = sys.argv[1], sys.argv[2], sys.argv[3]


def call(method, path, body=None, token=None):
    req = urllib.request.Request(base + path, method=method)
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", "Bearer " + token)
        req.add_header("x-appid", client_id)
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(req, data) as r:
            return json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        raise SystemExit(f"{method} {path}: {e.code} {e.read().decode()}")


token = call("POST", "/v1/oauth/token",
             {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret})["access_token"]


def user(first, last, email, parent=None, **extra):
    body = {"first_name": first, "last_name": last, "email": email, "status": "active", **extra}
    if parent:
        body["parent_user_id"] = parent
    return call("POST", "/v1/users", body, token)["id"]


def account(n):
    return {"account_id": f"ACC-{n:04d}", "account_id_type": "CARD_NUMBER_TOKEN", "status": "GOOD_STANDING",
            "product_code": "MC-REWARDS", "program_identifier": "PRG-1"}


address = {"line1": "12 Marina Walk", "city": "Dubai", "country": "AE", "postal_code": "00000"}
call("POST", "/v1/card-products", {"name": "Rewards Virtual", "card_type": "virtual", "issuer": "marqeta",
                                  "default": True}, token)
call("POST", "/v1/card-products", {"name": "Rewards Metal", "card_type": "physical", "issuer": "marqeta",
                                  "bin": "535522"}, token)

# A family: grandparents, parents, children.
amira = user("Amira", "Haddad", "amira.haddad@example.com", mobile="+971501234567", nationality="AE",
             locale="ar-AE", date_of_birth="1958-03-14", address=address, account=account(1),
             kyc={"kyc_id": "kyc_1001", "status": "approved"},
             verification_questions=[{"code": "FIRST_SCHOOL", "answer": "Al Noor"}])
omar = user("Omar", "Haddad", "omar.haddad@example.com", parent=amira, account=account(2), address=address)
layla = user("Layla", "Haddad", "layla.haddad@example.com", parent=amira, account=account(3))
kids = [user(n, "Haddad", f"{n.lower()}.haddad@example.com", parent=omar) for n in ("Yusuf", "Maryam", "Zaid")]
user("Noor", "Haddad", "noor.haddad@example.com", parent=layla)
user("Sami", "Haddad", "sami.haddad@example.com", parent=kids[0])

# A company and its employees (a larger subtree).
acme = user("Acme", "Trading LLC", "accounts@acme-trading.example.com",
            external_ref={"id": "CORP-77", "type": "COMPANY_ID"}, account=account(10))
teams = [user(t, "Team", f"{t.lower()}@acme-trading.example.com", parent=acme) for t in ("Sales", "Operations")]
for i in range(14):
    user(f"Employee{i + 1:02d}", "Acme", f"employee{i + 1:02d}@acme-trading.example.com",
         parent=teams[i % 2], employee_id=f"E-{1000 + i}")

# A household with the family's accounts.
household = call("POST", "/v1/households", {"name": "Haddad family"}, token)["id"]
for uid, n in ((amira, 1), (omar, 2), (layla, 3)):
    call("POST", f"/v1/households/{household}/members", {"user_id": uid, "account_id": f"ACC-{n:04d}"}, token)

# A history on Amira: profile changes, KYC, status, cards.
call("PATCH", f"/v1/users/{amira}", {"mobile": "+971509876543", "address": {"line2": "Apartment 1204"}}, token)
call("PATCH", f"/v1/users/{amira}/kyc", {"status": "pending"}, token)
call("PATCH", f"/v1/users/{amira}/kyc", {"status": "approved"}, token)
call("POST", f"/v1/users/{amira}/accounts", account(4), token)
card = call("POST", f"/v1/users/{amira}/cards", {}, token)
call("POST", f"/v1/users/{amira}/cards", {"instructions": {"address2use": "user", "expedite": True}}, token)
call("POST", f"/v1/users/{amira}/cards/terminate", {"pan": card["last4"], "reason_code": "LOST"}, token)
call("POST", f"/v1/users/{amira}/status", {"status": "blocked", "reason": "Card reported lost"}, token)
call("POST", f"/v1/users/{amira}/status", {"status": "active", "reason": "Identity confirmed"}, token)
call("PATCH", f"/v1/users/{amira}", {"last_name": "Haddad-Saleh"}, token)

# And on Omar, who has a parent and children.
call("PATCH", f"/v1/users/{omar}", {"mobile": "+971507654321", "nationality": "AE"}, token)
call("PATCH", f"/v1/users/{omar}/kyc", {"kyc_id": "kyc_2002", "status": "approved"}, token)
call("POST", f"/v1/users/{omar}/status", {"status": "blocked", "reason": "Suspicious login"}, token)
call("POST", f"/v1/users/{omar}/status", {"status": "active", "reason": "Verified by phone"}, token)

print(json.dumps({"example_user": amira, "tree_user": omar, "household": household}))
