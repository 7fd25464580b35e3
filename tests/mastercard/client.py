"""A Mastercard API client, as a program that integrates with Mastercard
would run it: Mastercard's own `mastercard-oauth1-signer` signs each
request and `mastercard-client-encryption` encrypts its body and decrypts
the answer (pinned by requirements.txt, installed by scripts/infra.sh).

The end-to-end tests run it with one JSON object on stdin:

  method, url, body (JSON or null), consumer_key, signing_key (PEM path),
  encrypt (bool), encryption_cert (Roster's certificate, PEM path),
  decryption_key (the client's private key, PEM path),
  and what to do wrong, each optional:
    sign_body       the body the signature is computed over (altered body)
    sign_url        the URL the signature is computed for (ROSTER_PUBLIC_URL)
    timestamp       oauth_timestamp to sign with (stale timestamp)
    nonce           oauth_nonce to sign with (reused nonce)
    kid             the encryptionKeyFingerprint to put in the JWE (foreign kid)
    tamper          "ciphertext" flips a byte of the JWE's ciphertext
    enc             "A128CBC-HS256": encrypt with it (no Mastercard library
                    emits it; built here per RFC 7516 with pyca/cryptography)
    copies          send the same signed request this many times at once

and prints one JSON object per request sent: {status, headers, body,
encrypted}, `body` decrypted by the library when the answer was encrypted.
"""

import base64
import concurrent.futures
import json
import os
import sys

import requests
from client_encryption.jwe_encryption import decrypt_payload, encrypt_payload
from client_encryption.jwe_encryption_config import JweEncryptionConfig
from cryptography.hazmat.primitives import hashes, hmac, padding, serialization
from cryptography.hazmat.primitives.asymmetric import padding as asym
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography import x509

import oauth1.coreutils
from oauth1.oauth import OAuth


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def cbc_hs256(plaintext, cert_path):
    """JWE compact, RSA-OAEP-256 + A128CBC-HS256 (RFC 7516, RFC 7518 5.2)."""
    with open(cert_path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki)
    header = b64url(json.dumps({"alg": "RSA-OAEP-256", "enc": "A128CBC-HS256", "kid": digest.finalize().hex()}).encode())
    cek, iv = os.urandom(32), os.urandom(16)
    wrapped = cert.public_key().encrypt(
        cek, asym.OAEP(mgf=asym.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    )
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(cek[16:]), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    aad = header.encode("ascii")
    mac = hmac.HMAC(cek[:16], hashes.SHA256())
    mac.update(aad + iv + ciphertext + (len(aad) * 8).to_bytes(8, "big"))
    tag = mac.finalize()[:16]
    return ".".join([header, b64url(wrapped), b64url(iv), b64url(ciphertext), b64url(tag)])


def main():
    spec = json.load(sys.stdin)
    config = {
        "paths": {"$": {"toEncrypt": {"$": "$"}, "toDecrypt": {"$": "$"}}},
        "encryptedValueFieldName": "encryptedValue",
    }
    if spec.get("encryption_cert"):
        config["encryptionCertificate"] = spec["encryption_cert"]
    if spec.get("decryption_key"):
        config["decryptionKey"] = spec["decryption_key"]
    if spec.get("kid"):
        config["encryptionKeyFingerprint"] = spec["kid"]
    jwe = JweEncryptionConfig(config)

    body = spec.get("body")
    if body is not None and spec.get("encrypt"):
        if spec.get("enc") == "A128CBC-HS256":
            body = {"encryptedValue": cbc_hs256(json.dumps(body).encode(), spec["encryption_cert"])}
        else:
            body = encrypt_payload(body, jwe)
        if spec.get("tamper") == "ciphertext":
            parts = body["encryptedValue"].split(".")
            raw = bytearray(base64.urlsafe_b64decode(parts[3] + "=" * (-len(parts[3]) % 4)))
            raw[0] ^= 1
            parts[3] = b64url(bytes(raw))
            body["encryptedValue"] = ".".join(parts)
    payload = None if body is None else json.dumps(body)

    if spec.get("timestamp") is not None:
        oauth1.coreutils.get_timestamp = lambda: spec["timestamp"]
    if spec.get("nonce") is not None:
        oauth1.coreutils.get_nonce = lambda length=16: spec["nonce"]
    with open(spec["signing_key"], "rb") as f:
        signing_key = serialization.load_pem_private_key(f.read(), password=None)
    signed_over = spec["sign_body"] if "sign_body" in spec else payload
    if isinstance(signed_over, (dict, list)):
        signed_over = json.dumps(signed_over)
    authorization = OAuth.get_authorization_header(
        spec.get("sign_url", spec["url"]), spec["method"], signed_over, spec["consumer_key"], signing_key
    )
    headers = {"Authorization": authorization}
    if payload is not None:
        headers["Content-Type"] = "application/json"
    headers.update(spec.get("headers") or {})

    def send(_):
        r = requests.request(spec["method"], spec["url"], data=payload, headers=headers, timeout=30)
        try:
            answer = r.json()
        except ValueError:
            answer = r.text
        encrypted = isinstance(answer, dict) and set(answer) == {"encryptedValue"}
        if encrypted and spec.get("decryption_key"):
            answer = decrypt_payload(answer, jwe)
            if isinstance(answer, str):
                answer = json.loads(answer)
        return {"status": r.status_code, "headers": dict(r.headers), "body": answer, "encrypted": encrypted}

    copies = spec.get("copies", 1)
    with concurrent.futures.ThreadPoolExecutor(max_workers=copies) as pool:
        for result in pool.map(send, range(copies)):
            print(json.dumps(result))


if __name__ == "__main__":
    main()
